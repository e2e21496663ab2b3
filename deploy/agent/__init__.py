"""The device-side agent: what ``deploy`` runs on the device over SSH, shipped as one stdlib-only zipapp.

One idea per module (``protocol`` is the contract with the host)::

    protocol            requests, answers and their message types; release-id format; error kinds
    errors              AgentError
    main                the command line, ``serve`` (one session) and one-shot commands
    locking             one lock per device root, for a whole push or control command
    durable             fsync'd writes, renames and symlink switches (what survives a power cut)
    layout              where everything lives under the remote directory
    probe               facts for ``deploy doctor``
    releases            prepare, verify + publish, switch ``current``, prune, list
    venvs               one venv per requirements hash, pinned by each release
    supervisor          which supervisor, recorded on the device; start/stop/restart through it
    process_supervisor  the detached supervisor where systemd is not used (exact process references)
    systemd             the unit: render, install, systemctl, journald
    daemon              a release's daemon command line
    procs               exact process identity (pid + start time + boot id, pidfds)
    health              /healthz and /stats on the loopback (never through a proxy), wait, status
    logs                log tails
    bench               the device benchmark
    collect             labelled frames through the running daemon, or a one-shot process when none runs
    data                what was collected and kept as uncertain, listed with sha256 for pull-data
    runner              how the agent starts itself (the process supervisor)
    build               (host side) the deterministic zipapp and its hash

The zipapp also carries the stdlib-only ``device`` modules it imports (``device.hardware``,
``device.manifest``, ``device.errors``, ``device.service``, ``device.labels``, ``device.framestore``
and the unit template), so each fact
has one home; ``tests/deploy/test_agent_package.py`` runs the real zipapp and fails if anything
outside the standard library is imported.
"""
