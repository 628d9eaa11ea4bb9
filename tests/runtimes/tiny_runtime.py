#!/usr/bin/env python3
"""A runtime program in the runtime SDK's Command mode, for the tests of program runtimes (standard library only).

``tiny_runtime.py [--workdir W] [--deploy ok|invalid|blocking|garbage|fail] [--self-test ok|fail] COMMAND …``:

* ``test``: exit 0, or with ``--self-test fail`` say why on stderr and exit 3;
* ``offer-template``: ``{"constraints": "", "properties": {"golem.runtime.tiny.flavour": "plain"}}``;
* ``deploy --``: volumes ``/in`` (``W/vol-in``) and ``/out`` (``W/vol-out``); ``--deploy`` answers an invalid
  deployment, Server mode, something that is not JSON, or fails;
* ``start -- ARGS…``: writes ``W/started``;
* ``run --entrypoint ENTRY -- ARGS…``: ``echo WORDS…``, ``exit N``, ``upper SRC DST`` (paths in the volumes),
  ``crash`` (a segmentation fault after some output), ``sleep TOKEN`` (sleeps for 10 minutes),
  ``linger FILE [ignore]`` (leaves a process in the background that writes ``FILE`` when it gets SIGTERM, or
  ignores SIGTERM, and prints its pid).
"""

import json
import os
import signal
import sys
import time

VOLUMES = {"/in": "vol-in", "/out": "vol-out"}


def host_path(workdir, path):
    for inside, name in VOLUMES.items():
        if path == inside or path.startswith(inside + "/"):
            return os.path.join(workdir, name, path[len(inside) :].lstrip("/"))
    sys.exit(f"{path} is in no volume")


def deploy(mode):
    if mode == "fail":
        sys.exit("tiny runtime: cannot deploy here")
    if mode == "garbage":
        print("deployed, I think")
        return
    answer = {
        "startMode": "blocking" if mode == "blocking" else "empty",
        "valid": {"Err": "the task package is for another architecture"} if mode == "invalid" else {"Ok": "fine"},
        "vols": [{"name": name, "path": inside} for inside, name in VOLUMES.items()],
    }
    print(json.dumps(answer))


def linger(target, ignore):
    ready_read, ready_write = os.pipe()
    if os.fork() == 0:  # the background process: same process group, its own stdio
        os.close(ready_read)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)

        def bye(_signum, _frame):
            with open(target, "w") as file:
                file.write("terminated gracefully\n")
            os._exit(0)

        signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore else bye)
        os.write(ready_write, str(os.getpid()).encode())
        os.close(ready_write)
        while True:
            time.sleep(3600)
    os.close(ready_write)
    pid = os.read(ready_read, 32).decode()
    print(f"daemon {pid}", flush=True)


def run(workdir, entry, args):
    if entry == "echo":
        print(" ".join(args), flush=True)
        print("echoed", file=sys.stderr, flush=True)
    elif entry == "exit":
        print(f"exiting {args[0]}", flush=True)
        sys.exit(int(args[0]))
    elif entry == "upper":
        with open(host_path(workdir, args[0])) as source, open(host_path(workdir, args[1]), "w") as target:
            target.write(source.read().upper())
    elif entry == "crash":
        print("about to crash", flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
    elif entry == "sleep":
        print(f"sleeping {args[0]}", flush=True)
        time.sleep(600)
    elif entry == "linger":
        linger(args[0], args[1:] == ["ignore"])
    else:
        sys.exit(f"tiny runtime: unknown command {entry!r}")


def main(argv):
    workdir, options = None, {"--deploy": "ok", "--self-test": "ok"}
    while argv and argv[0].startswith("--"):
        key, value, argv = argv[0], argv[1], argv[2:]
        if key == "--workdir":
            workdir = value
        else:
            options[key] = value
    command, rest = argv[0], argv[1:]
    if command == "test":
        if options["--self-test"] == "fail":
            sys.exit("tiny runtime: this machine has no GPU")
    elif command == "offer-template":
        print(json.dumps({"constraints": "", "properties": {"golem.runtime.tiny.flavour": "plain"}}))
    elif command == "deploy":
        deploy(options["--deploy"])
    elif command == "start":
        with open(os.path.join(workdir, "started"), "w") as file:
            file.write(" ".join(rest[1:]))
    elif command == "run":
        if rest[:1] != ["--entrypoint"] or rest[2:3] != ["--"]:
            sys.exit(f"tiny runtime: expected run --entrypoint ENTRY -- ARGS, got {rest!r}")
        run(workdir, rest[1], rest[3:])
    else:
        sys.exit(f"tiny runtime: unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
