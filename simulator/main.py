"""``pitrix-sim``: the simulator as a standalone process.

It prints one JSON ready line on stdout (the endpoint and the access key pair) and logs to stderr;
``--credentials-file`` also writes the runtime's settings and key pair to a 0600 file that
``pitrix runtimes add --credentials-file`` reads, so the secret never passes through a command line.
A given key pair comes from the environment (``PITRIX_SIM_ACCESS_KEY_ID``,
``PITRIX_SIM_SECRET_ACCESS_KEY``); the flags still work but warn.
SIGTERM or SIGINT terminates every VM before exiting 0, so a parent that stops it finds no process
and no VM directory left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# --help and a bad flag answer from argparse alone: the simulator (aiohttp, asyncssh, the providers'
# models) is imported by the functions that run it.


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pitrix-sim", description="A fake QingCloud with real local VMs.")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address of the API (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="API port (default: any free port)")
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="VM roots live here (default: <state>/sim)"
    )
    parser.add_argument(
        "--network",
        default=os.environ.get("PITRIX_SIM_NETWORK", "127.100.0.0/16"),
        help="loopback network of the VMs (default: PITRIX_SIM_NETWORK, else 127.100.0.0/16)",
    )
    parser.add_argument(
        "--images-dir", type=Path, action="append", default=[], help="extra image directory (repeatable)"
    )
    parser.add_argument("--zone", default="sim1")
    parser.add_argument(
        "--access-key-id", default=os.environ.get("PITRIX_SIM_ACCESS_KEY_ID"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--secret-access-key",
        default=os.environ.get("PITRIX_SIM_SECRET_ACCESS_KEY"),
        help=argparse.SUPPRESS,  # visible in ps: PITRIX_SIM_SECRET_ACCESS_KEY instead
    )
    parser.add_argument(
        "--credentials-file",
        type=Path,
        help="also write endpoint, zone and the key pair here (TOML, mode 0600), "
        "for pitrix runtimes add --credentials-file",
    )
    parser.add_argument(
        "--aws-credentials-file",
        type=Path,
        help="write the runtime of the EC2 face (provider aws: endpoint, region, key pair) here "
        "(TOML, mode 0600), for pitrix runtimes add --credentials-file",
    )
    parser.add_argument(
        "--light",
        action="store_true",
        help="light mode: VMs run no process (in-process SSH shell and agent), for thousands of VMs",
    )
    parser.add_argument(
        "--light-workers",
        type=int,
        default=1,
        help="light mode: run the light VMs (their SSH and agents) in N worker processes beside the "
        "API process (default 1: all in the API process)",
    )
    parser.add_argument("--ssh-port", type=int, default=2222, help="SSH port on every VM's address")
    parser.add_argument("--fault-seed", type=int, default=None, help="seed of the fault dice (replayable)")
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--vxnet",
        action="append",
        default=[],
        metavar="ID",
        help="a QingCloud vxnet RunInstances accepts besides the base vxnet-0 (repeatable)",
    )
    args = parser.parse_args(argv)
    if (args.access_key_id is None) != (args.secret_access_key is None):
        parser.error(
            "--access-key-id and --secret-access-key (PITRIX_SIM_ACCESS_KEY_ID and "
            "PITRIX_SIM_SECRET_ACCESS_KEY) go together"
        )
    if any(
        a == "--secret-access-key" or a.startswith("--secret-access-key=")
        for a in (sys.argv[1:] if argv is None else argv)
    ):
        print(
            "pitrix-sim: warning: --secret-access-key is visible to every user of this host (ps); "
            "use PITRIX_SIM_SECRET_ACCESS_KEY instead",
            file=sys.stderr,
        )
    if args.light_workers < 1:
        parser.error("--light-workers: must be at least 1")
    if args.light_workers > 1 and not args.light:
        parser.error("--light-workers: only with --light (full VMs are processes of their own)")
    for directory in args.images_dir:
        if not directory.is_dir():
            parser.error(f"--images-dir: {directory} is not a directory")
    return args


async def serve(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from pitrix.paths import default_state_dir
    from simulator.cloud import Simulator

    credentials = None
    if args.access_key_id is not None:
        credentials = {"access_key_id": args.access_key_id, "secret_access_key": args.secret_access_key}
    sim = Simulator(
        args.state_dir or default_state_dir("sim"),
        host=args.host,
        port=args.port,
        network=args.network,
        images_dirs=args.images_dir,
        credentials=credentials,
        zone=args.zone,
        light=args.light,
        ssh_port=args.ssh_port,
        fault_seed=args.fault_seed,
        light_workers=args.light_workers,
        log_level=args.log_level,
        vxnets=args.vxnet,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        url = await sim.start()
        # "endpoint" repeats "url" so the line is also a runtime definition for the qingcloud provider.
        ready = {
            "ready": True,
            "url": url,
            "endpoint": url,
            "zone": sim.zone,
            **sim.credentials,
            "light": sim.light,
            "light_worker_pids": sim.light_worker_pids,
            # The EC2 face (provider aws): the same key pair signs SigV4 for region = zone.
            "ec2_endpoint": sim.aws_runtime()["endpoint"],
            "region": sim.zone,
        }
        if args.credentials_file is not None:
            write_credentials(args.credentials_file, sim.runtime())
        if args.aws_credentials_file is not None:
            write_credentials(args.aws_credentials_file, sim.aws_runtime())
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        await stopping.wait()
    finally:
        await sim.stop()
    return 0


def write_credentials(path: Path, runtime: dict[str, object]) -> None:
    """The runtime's settings as a flat TOML table, readable by its owner only."""
    lines = [f"{key} = {json.dumps(value)}\n" for key, value in runtime.items() if key != "provider"]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
    with os.fdopen(fd, "w") as out:
        out.writelines(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from pitrix import aio, logs
    from simulator.network import NETWORK_IN_USE_EXIT, NetworkError, NetworkInUse

    try:
        logs.configure(args.log_level)
    except ValueError as exc:
        sys.exit(f"pitrix-sim: {exc}")
    try:
        code = aio.run(serve(args))
    except NetworkInUse as exc:  # a status of its own: whoever drew the network may draw another
        print(f"pitrix-sim: {exc}", file=sys.stderr)
        sys.exit(NETWORK_IN_USE_EXIT)
    except (ValueError, NetworkError, OSError) as exc:
        sys.exit(f"pitrix-sim: {exc}")
    sys.exit(code)


if __name__ == "__main__":
    main()
