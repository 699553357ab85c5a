"""``pitrix-metad``: serve the instance and management APIs over an external or embedded etcd."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitrix import __version__
from pitrix.argparser import ArgumentParser

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Coroutine

    from pitrix.metad.peering import Peering
    from pitrix.metad.server import Metad
    from pitrix.metad.tls import MetadTLS
    from pitrix.store import Store

# --help, --version and a bad flag answer from argparse alone: aiohttp, cryptography (pki),
# structlog and etcd's client are imported by the functions that serve, after the flags are checked.

EMBEDDED_MAX_TXN_OPS = 16384


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0..65535)")
    return value


def _ip(text: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def _version_first(argv: list[str] | None) -> None:
    """``--version`` answers (and exits) before the flags' defaults are read: they come from the
    connection limits, whose dataclasses module costs a fifth of a bare Python's start."""
    version = ArgumentParser(prog="pitrix-metad", add_help=False, allow_abbrev=False)
    version.add_argument("--version", action="version", version=f"pitrix-metad {__version__}")
    version.parse_known_args(argv)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    _version_first(argv)
    import dataclasses

    from pitrix.metad.limits import DEFAULT_WAIT_TIMEOUT, ConnectionLimits, LimitsError

    parser = ArgumentParser(prog="pitrix-metad", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pitrix-metad {__version__}")
    parser.add_argument("--listen-ip", type=_ip, required=True, help="address both APIs listen on")
    parser.add_argument("--instance-port", type=_port, default=8080)
    parser.add_argument("--manage-port", type=_port, default=9611)
    parser.add_argument(
        "--etcd", action="append", default=[], metavar="URL", help="etcd client URL (repeatable)"
    )
    parser.add_argument(
        "--embedded-etcd",
        action="store_true",
        help="run a private etcd under --state-dir; it speaks mutual TLS only, with a CA born there",
    )
    parser.add_argument(
        "--etcd-cacert", type=Path, help="CA that signed the external etcd's server certificate"
    )
    parser.add_argument("--etcd-cert", type=Path, help="client certificate for the external etcd (PEM)")
    parser.add_argument("--etcd-key", type=Path, help="the client certificate's key (PEM)")
    parser.add_argument("--state-dir", type=Path, help="state directory of the embedded etcd")
    parser.add_argument("--etcd-client-port", type=_port, default=2379)
    parser.add_argument("--etcd-peer-port", type=_port, default=2380)
    parser.add_argument("--prefix", default="", help="etcd key prefix the metadata lives under")
    parser.add_argument(
        "--park-idle-polls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="hold identified idle long-polls at the connection, not in the HTTP server: less "
        "memory per idle instance, a little more latency when a change wakes thousands at once",
    )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=DEFAULT_WAIT_TIMEOUT,
        help="seconds a long-poll is held before answering the current value",
    )
    _cluster_arguments(parser)
    tls = parser.add_argument_group("identity (mutual TLS, or the legacy source-address model)")
    tls.add_argument("--tls-cert", type=Path, help="metad's server certificate (PEM; SAN = its IP)")
    tls.add_argument("--tls-key", type=Path, help="the server certificate's key (PEM)")
    tls.add_argument("--client-ca", type=Path, help="CA certificate(s) every client must be signed by")
    tls.add_argument("--issuer-cert", type=Path, help="CA that signs renewals (POST /self/cert)")
    tls.add_argument("--issuer-key", type=Path, help="the issuer's key")
    tls.add_argument(
        "--cert-lifetime",
        type=float,
        metavar="SECONDS",
        help="lifetime of the instance certificates the issuer signs (bootstrap and renewal; default 86400)",
    )
    tls.add_argument(
        "--issuer-bootstrap-token-file",
        type=Path,
        metavar="FILE",
        help="make the issuer's key here and get its certificate from pitrixd with the one-time token "
        "in FILE (needs --state-dir; until then only the bootstrap answers on --manage-port)",
    )
    tls.add_argument(
        "--root-ca",
        type=Path,
        help="with --issuer-bootstrap-token-file: the installation's root; the issuer must chain to it",
    )
    tls.add_argument(
        "--management-ca",
        type=Path,
        help="CA(s) the management port's clients must come from (default: --client-ca)",
    )
    tls.add_argument(
        "--renewal-grace",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long a certificate replaced by a renewal (POST /self/cert) stays valid",
    )
    tls.add_argument(
        "--legacy-source-ip",
        action="store_true",
        help=(
            "identify instances by source address over plain HTTP (metad's model). This gives up: "
            "encryption (metadata, passwords included, cross the network in clear text), any proof of "
            "who an instance is (whoever holds or spoofs a mapped address, or sits behind a trusted "
            "proxy, reads that instance's /self), certificate revocation, and the management API's "
            "certificate check: it is then served on --manage-listen-ip (default 127.0.0.1)"
        ),
    )
    tls.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        type=_ip,
        metavar="IP",
        help="with --legacy-source-ip: a proxy whose X-Forwarded-For is believed (repeatable)",
    )
    tls.add_argument(
        "--manage-listen-ip",
        type=_ip,
        help=(
            "address of the management API (default: --listen-ip with mutual TLS, 127.0.0.1 in the "
            "legacy model, where it must be an address instances cannot reach)"
        ),
    )
    tls.add_argument(
        "--insecure-open-management-api",
        action="store_true",
        help=(
            "legacy model only: serve the management API without a certificate on an address "
            "instances reach (--listen-ip, or 0.0.0.0): any instance can then read every cluster's "
            "data and remap any instance to itself"
        ),
    )
    limits = parser.add_argument_group("connections (what an unidentified peer can hold)")
    defaults = ConnectionLimits()
    for name, kind, text in (
        ("handshake_timeout", float, "seconds a TLS handshake may take"),
        ("header_timeout", float, "seconds from the handshake (accept) to the first request's headers"),
        ("idle_timeout", float, "seconds a keep-alive connection may sit between requests"),
        ("max_connections", int, "connections in all, both ports (lowered to fit the descriptor limit)"),
        ("max_unidentified", int, "of those, at most this many without a client certificate (or mapping)"),
        ("max_unidentified_per_source", int, "unidentified connections from one source address"),
        ("max_per_identity", int, "connections one instance's certificate (or mapped address) may hold"),
    ):
        default = getattr(defaults, name)
        limits.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=default, help=f"{text} (default {default})"
        )
    parser.add_argument("--log-level", default=os.environ.get("PITRIX_LOG_LEVEL", "info"))
    args = parser.parse_args(argv)
    _issuer_bootstrap_args(parser, args)
    tls_given = [f"--{n.replace('_', '-')}" for n in ("tls_cert", "tls_key", "client_ca") if getattr(args, n)]
    args.self_issued = tls_given == ["--client-ca"] and bool(args.issuer_cert)
    if tls_given and len(tls_given) != 3 and not args.self_issued:
        parser.error(
            "mutual TLS needs all of --tls-cert, --tls-key and --client-ca "
            "(or --client-ca with --issuer-cert/--issuer-key: metad then issues its own server certificate)"
        )
    if tls_given and args.legacy_source_ip:
        parser.error("--legacy-source-ip cannot be combined with --tls-cert/--tls-key/--client-ca")
    if bool(args.issuer_cert) != bool(args.issuer_key):
        parser.error("--issuer-cert and --issuer-key go together")
    if args.issuer_cert and not tls_given:
        parser.error("--issuer-cert/--issuer-key need mutual TLS (--tls-cert, --tls-key, --client-ca)")
    if args.trusted_proxy and tls_given:
        parser.error("--trusted-proxy applies only to --legacy-source-ip")
    args.implicit_legacy = not tls_given and not args.legacy_source_ip
    legacy = not tls_given
    if args.insecure_open_management_api and not legacy:
        parser.error("--insecure-open-management-api applies only to the legacy model (no TLS flags)")
    if legacy:
        _legacy_management(parser, args)
    try:
        args.limits = ConnectionLimits(
            **{f.name: getattr(args, f.name) for f in dataclasses.fields(ConnectionLimits)}
        )
    except LimitsError as exc:
        parser.error(str(exc))
    if bool(args.etcd) == bool(args.embedded_etcd):
        parser.error("give either --etcd URL (repeatable) or --embedded-etcd --state-dir DIR")
    if args.embedded_etcd and args.state_dir is None:
        parser.error("--embedded-etcd needs --state-dir DIR")
    etcd_tls_given = [f for f in ("etcd_cacert", "etcd_cert", "etcd_key") if getattr(args, f)]
    if etcd_tls_given and args.embedded_etcd:
        parser.error(
            "--etcd-cacert/--etcd-cert/--etcd-key are for an external etcd (--embedded-etcd makes its own)"
        )
    if bool(args.etcd_cert) != bool(args.etcd_key):
        parser.error("--etcd-cert and --etcd-key go together")
    args.etcd_tls = None
    if etcd_tls_given:
        from pitrix.store.tls import EtcdTLS

        args.etcd_tls = EtcdTLS(args.etcd_cacert, args.etcd_cert, args.etcd_key)
    for url in args.etcd:
        if url.startswith("https://") and args.etcd_tls is None:
            parser.error(f"--etcd {url} is https://: give --etcd-cacert (and --etcd-cert/--etcd-key)")
        if url.startswith("http://") and args.etcd_tls is not None:
            parser.error(f"--etcd {url} is plain http:// but --etcd-cacert/--etcd-cert/--etcd-key are given")
    _cluster_args(parser, args)
    if args.wait_timeout <= 0:
        parser.error("--wait-timeout must be positive")
    if args.cert_lifetime is not None and args.cert_lifetime <= 0:
        parser.error("--cert-lifetime must be positive")
    return args


def _cluster_arguments(parser: argparse.ArgumentParser) -> None:
    cluster = parser.add_argument_group(
        "a metadata cluster of several members (the embedded etcd as one of them, a metad beside each)"
    )
    cluster.add_argument(
        "--etcd-member", metavar="NAME", help="this member's name among --etcd-peer (default: pitrix)"
    )
    cluster.add_argument(
        "--etcd-peer",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="a member and its peer URL (https://ip:port), this one included (repeatable)",
    )
    cluster.add_argument(
        "--etcd-cluster-state",
        choices=["new", "existing"],
        default="new",
        help="new: the members start together; existing: this one joins after being added there",
    )
    cluster.add_argument("--etcd-cluster-token", default="pitrix", help="the cluster's token (unique)")
    cluster.add_argument("--etcd-peer-ca", type=Path, help="the CA every member's peer certificate is from")
    cluster.add_argument("--etcd-peer-cert", type=Path, help="this member's peer certificate (PEM)")
    cluster.add_argument("--etcd-peer-key", type=Path, help="the peer certificate's key (PEM)")
    cluster.add_argument(
        "--issuer-from-cluster",
        action="store_true",
        help="with --issuer-bootstrap-token-file: a member joining a cluster whose issuer exists; it "
        "asks pitrixd for its peer certificate only and takes the issuer from its etcd",
    )
    cluster.add_argument(
        "--etcd-peer-cn",
        default="",
        metavar="CN",
        help="the CN every peer's certificate must carry (where the peers' CA serves many clusters)",
    )
    cluster.add_argument(
        "--etcd-start-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="with --etcd-peer: how long the member may wait for a quorum of its peers at start",
    )


def _cluster_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check the member flags. ``args.etcd_member_mode``: this metad's etcd is one member of
    several; ``args.etcd_peers`` describes them, or is None until the issuer bootstrap brings the
    list (a metadata VM: its peers' addresses are known only once the cloud ran them all)."""
    args.etcd_peers = None
    bootstrap = args.issuer_bootstrap_token_file is not None
    from_bootstrap = bootstrap and bool(args.etcd_member) and not args.etcd_peer
    args.etcd_member_mode = bool(args.etcd_peer) or from_bootstrap
    peer_tls = [f for f in ("etcd_peer_ca", "etcd_peer_cert", "etcd_peer_key") if getattr(args, f)]
    if args.issuer_from_cluster and not (args.etcd_member_mode and bootstrap):
        parser.error("--issuer-from-cluster goes with --etcd-member and --issuer-bootstrap-token-file")
    if not args.etcd_member_mode:
        if peer_tls or args.etcd_member or args.etcd_cluster_state != "new":
            parser.error(
                "--etcd-member/--etcd-cluster-state/--etcd-peer-* go with --etcd-peer NAME=URL "
                "(or, with --issuer-bootstrap-token-file, --etcd-member NAME alone)"
            )
        return
    if not args.embedded_etcd:
        parser.error("--etcd-peer: only the embedded etcd (--embedded-etcd) is run as a member")
    if bootstrap and peer_tls != ["etcd_peer_ca"]:
        parser.error(
            "a member with --issuer-bootstrap-token-file: give --etcd-peer-ca only "
            "(the peer certificate comes with the issuer's)"
        )
    if not bootstrap and len(peer_tls) != 3:
        parser.error(
            "--etcd-peer: members speak mutual TLS: give --etcd-peer-ca, --etcd-peer-cert, --etcd-peer-key"
        )
    if not args.etcd_member or "=" in args.etcd_member or "," in args.etcd_member:
        parser.error("--etcd-member: this member's name (no '=' or ',') is required")
    if not args.etcd_peer_port:
        parser.error("--etcd-peer-port: a member needs the fixed port its peers know (not 0)")
    if args.etcd_start_timeout <= 0:
        parser.error("--etcd-start-timeout must be positive")
    host = f"[{args.listen_ip}]" if ":" in args.listen_ip else args.listen_ip
    args.etcd_peer_url = f"https://{host}:{args.etcd_peer_port}"
    if bootstrap:
        from pitrix.metad.issuer_bootstrap import IssuerBootstrap

        files = IssuerBootstrap.files_under(args.state_dir, peer=True)
        args.etcd_peer_cert, args.etcd_peer_key = files.peer_cert, files.peer_key
    if from_bootstrap:
        return  # the members' list arrives with the certificates
    members: dict[str, str] = {}
    for given in args.etcd_peer:
        name, sep, url = given.partition("=")
        if not sep or not name or "," in name or not url.startswith("https://"):
            parser.error(f"--etcd-peer {given!r}: must be NAME=https://ip:port")
        if name in members:
            parser.error(f"--etcd-peer: member {name!r} is given twice")
        members[name] = url
    if args.etcd_member not in members:
        parser.error(f"--etcd-member: must name this member, one of {', '.join(members)}")
    if members[args.etcd_member] != args.etcd_peer_url:
        parser.error(
            f"--etcd-peer {args.etcd_member}: this member's peer URL is {args.etcd_peer_url} "
            "(from --listen-ip and --etcd-peer-port)"
        )
    args.etcd_peers = _peers(args, members, args.etcd_cluster_state)


def _peers(args: argparse.Namespace, members: dict[str, str], state: str) -> Any:
    from pitrix.store.embedded import EtcdPeers
    from pitrix.store.tls import EtcdTLS

    tls = EtcdTLS(args.etcd_peer_ca, args.etcd_peer_cert, args.etcd_peer_key)
    return EtcdPeers(members, tls, state, args.etcd_cluster_token, args.etcd_peer_cn)  # type: ignore[arg-type]


def _legacy_management(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Where the legacy model's certificate-less management API may listen.

    Anyone who reaches it can read every cluster and remap any instance to their own address, so
    it stays off the instances' network (loopback by default) unless the operator says otherwise
    in as many words.
    """
    if args.manage_listen_ip is None:
        args.manage_listen_ip = args.listen_ip if args.insecure_open_management_api else "127.0.0.1"
        return
    import ipaddress

    manage = ipaddress.ip_address(args.manage_listen_ip)
    reachable = manage.is_unspecified or args.manage_listen_ip == args.listen_ip
    if reachable and not args.insecure_open_management_api:
        parser.error(
            f"--manage-listen-ip {args.manage_listen_ip}: without TLS the management API would answer every "
            "instance (any cluster's data, any mapping); give an address instances cannot reach "
            "(e.g. 127.0.0.1), mutual TLS (--tls-cert/--tls-key/--client-ca), or "
            "--insecure-open-management-api"
        )


def _issuer_bootstrap_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check the issuer-bootstrap flags; with them, the issuer's files and --client-ca are the ones
    the bootstrap will store under --state-dir (filled in before the TLS flags are checked)."""
    if args.renewal_grace < 0:
        parser.error("--renewal-grace must be >= 0")
    if args.issuer_bootstrap_token_file is None:
        if args.root_ca:
            parser.error("--root-ca applies only to --issuer-bootstrap-token-file")
        return
    clashing = [
        f for f in ("tls_cert", "tls_key", "client_ca", "issuer_cert", "issuer_key") if getattr(args, f)
    ]
    if clashing or args.legacy_source_ip:
        names = ", ".join(f"--{f.replace('_', '-')}" for f in clashing) or "--legacy-source-ip"
        parser.error(f"--issuer-bootstrap-token-file makes the issuer itself: drop {names}")
    if args.state_dir is None:
        parser.error("--issuer-bootstrap-token-file needs --state-dir DIR (where the issuer's key is kept)")
    from pitrix.metad.issuer_bootstrap import IssuerBootstrap

    files = IssuerBootstrap.files_under(args.state_dir)
    args.issuer_cert, args.issuer_key, args.client_ca = files.cert, files.key, files.cert


def tls_config(args: argparse.Namespace, scratch: Path) -> MetadTLS | None:
    """The TLS settings; a self-issued server certificate is written under ``scratch``."""
    if not args.client_ca:
        return None
    import datetime as dt

    from pitrix import pki
    from pitrix.metad.tls import MetadTLS, self_issued

    issuer = None
    if args.issuer_cert:
        issuer = pki.CertificateAuthority.load_pair(args.issuer_cert, args.issuer_key)
    lifetime = (
        pki.INSTANCE_LIFETIME if args.cert_lifetime is None else dt.timedelta(seconds=args.cert_lifetime)
    )
    extra = {"renewal_grace": args.renewal_grace, "manage_client_ca": args.management_ca}
    if args.self_issued:
        assert issuer is not None
        tls = self_issued(issuer, args.listen_ip, args.client_ca, scratch)
        import dataclasses

        return dataclasses.replace(tls, instance_lifetime=lifetime, **extra)
    return MetadTLS(args.tls_cert, args.tls_key, args.client_ca, issuer, lifetime, **extra)


async def serve(args: argparse.Namespace) -> int:
    import tempfile

    from pitrix.logs import get_logger
    from pitrix.metad import issuer_bootstrap

    if args.issuer_bootstrap_token_file is not None:
        # Before anything else listens: until pitrixd has signed the issuer, this is all metad does.
        try:
            peer = None
            if args.etcd_member_mode:  # a member of several: its peer certificate comes too
                try:
                    ca_pem = args.etcd_peer_ca.read_bytes()
                except OSError as exc:
                    raise issuer_bootstrap.BootstrapError(f"--etcd-peer-ca: {exc.strerror or exc}") from None
                listed = args.etcd_peers is None  # else the list came with the flags
                peer = issuer_bootstrap.PeerRequest(
                    ca_pem,
                    joins=args.issuer_from_cluster,
                    name=args.etcd_member if listed else "",
                    url=args.etcd_peer_url if listed else "",
                )
            files = await issuer_bootstrap.obtain(
                args.state_dir,
                args.issuer_bootstrap_token_file,
                args.root_ca,
                args.listen_ip,
                args.manage_port,
                peer,
            )
        except issuer_bootstrap.BootstrapError as exc:
            get_logger("pitrix.metad.main").error("issuer bootstrap failed", error=str(exc))
            return 1
        if args.etcd_member_mode and args.etcd_peers is None and files.members is not None:
            try:
                members, state = issuer_bootstrap.load_members(files.members)
            except (OSError, ValueError) as exc:
                get_logger("pitrix.metad.main").error("the members' list is unreadable", error=str(exc))
                return 1
            args.etcd_peers = _peers(args, members, state)
    if args.embedded_etcd and args.etcd_peers is None:
        # A single member moved to the peers' TLS since (a metadata cluster that grew) stays one.
        from pitrix.metad.peering import PeeringError, adopted

        try:
            moved = adopted(args.state_dir, args.listen_ip, args.etcd_peer_port)
        except PeeringError as exc:
            get_logger("pitrix.metad.main").error("cannot serve", error=str(exc))
            return 1
        if moved is not None:
            args.etcd_member, args.etcd_peers = moved
    # Where a self-issued server certificate lives without a state directory: gone at exit.
    with tempfile.TemporaryDirectory(prefix="pitrix-metad-") as scratch:
        return await _serve(args, Path(scratch))


async def _serve(args: argparse.Namespace, scratch: Path) -> int:
    import asyncio
    import signal

    from pitrix import pki, sdnotify
    from pitrix.logs import get_logger
    from pitrix.metad.server import Metad, MetadError
    from pitrix.store import Store, StoreError
    from pitrix.store.tls import EtcdTLS, EtcdTLSError

    log = get_logger("pitrix.metad.main", listen_ip=args.listen_ip)
    if args.implicit_legacy:
        # Transitional: the runtime still starts metad without flags; once it passes
        # --legacy-source-ip or the TLS flags, this becomes an error.
        log.warning("no --tls-cert/--tls-key/--client-ca: serving with legacy source-address identity")
    if args.insecure_open_management_api:
        log.warning(
            "--insecure-open-management-api: the management API answers anyone who reaches it, "
            "instances included (every cluster's data, every mapping)",
            manage_listen_ip=args.manage_listen_ip,
        )
    # A member of several serves with its cluster's issuer, known once its etcd has joined.
    shared = args.etcd_member_mode and args.issuer_bootstrap_token_file is not None
    tls = None
    try:
        if not shared:
            tls = tls_config(args, (args.state_dir or scratch) / "tls")
    except pki.PKIError as exc:
        log.error("cannot serve", error=str(exc))
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    embedded = None
    peering: Peering | None = None
    store: Store | None = None
    metad: Metad | None = None
    try:
        endpoints = list(args.etcd)
        etcd_tls: EtcdTLS | None = args.etcd_tls
        if args.embedded_etcd:
            from pitrix.store.embedded import EmbeddedEtcd

            # A cluster's registration is one transaction of a leaf per host field: etcd's default
            # cap of 128 operations would refuse any real cluster. etcd reads its flags from
            # ETCD_* variables and the child inherits ours; an operator's own setting wins.
            os.environ.setdefault("ETCD_MAX_TXN_OPS", str(EMBEDDED_MAX_TXN_OPS))

            cluster: dict[str, Any] = {}
            if args.etcd_peers is not None:
                cluster = {
                    "name": args.etcd_member,
                    "peers": args.etcd_peers,
                    "startup_timeout": args.etcd_start_timeout,
                }
            embedded = EmbeddedEtcd(
                args.state_dir,
                host=args.listen_ip,
                client_port=args.etcd_client_port,
                peer_port=args.etcd_peer_port,
                **cluster,
            )
            started = await _unless_stopped(embedded.start(), stop)
            if started is None:  # stopped while a member waited for its peers' quorum
                return 0
            endpoints = [started]
            embedded.supervise()  # etcd dying under metad is restarted, not served around
            etcd_tls = embedded.client_tls
        store = await Store.connect(endpoints, prefix=args.prefix, tls=etcd_tls)
        if shared:
            from pitrix.metad.issuer_share import ShareError, share

            try:
                mine = not args.issuer_from_cluster
                await share(
                    store, args.issuer_cert, args.issuer_key, mine=mine, timeout=args.etcd_start_timeout
                )
                tls = tls_config(args, args.state_dir / "tls")
            except (ShareError, pki.PKIError) as exc:
                log.error("cannot serve", error=str(exc))
                return 1
        if embedded is not None:
            from pitrix.metad.peering import Peering

            peering = Peering(
                embedded,
                store,
                member=args.etcd_member if args.etcd_peers is not None else "",
                issuer_cert=args.issuer_cert,
                issuer_key=args.issuer_key,
                start_timeout=args.etcd_start_timeout,
            )
        metad = Metad(
            store,
            args.listen_ip,
            args.instance_port,
            args.manage_port,
            wait_timeout=args.wait_timeout,
            tls=tls,
            trusted_proxies=args.trusted_proxy,
            limits=args.limits,
            manage_listen_ip=args.manage_listen_ip,
            park_idle_polls=args.park_idle_polls,
            peering=peering,
        )
        await metad.start()
        ready = {
            "ready": True,
            "url": metad.instance_url,
            "instance_url": metad.instance_url,
            "manage_url": metad.manage_url,
            "etcd": endpoints,
            "pid": os.getpid(),
            "identity": metad.identity.mode,
        }
        import json

        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        watchdog = await sdnotify.serving(f"serving {metad.instance_url}")
        await stop.wait()
        log.info("stopping")
        sdnotify.notify("STOPPING=1")
        if watchdog is not None:
            watchdog.cancel()
        return 0
    except (MetadError, StoreError, EtcdTLSError, OSError) as exc:
        log.error("cannot serve", error=str(exc))
        return 1
    except Exception as exc:
        if type(exc).__name__ == "EmbeddedEtcdError":
            log.error("embedded etcd failed", error=str(exc))
            return 1
        raise
    finally:
        if metad is not None:
            await metad.stop()
        if store is not None:
            await store.close()
        if peering is not None:
            embedded = peering.etcd  # the one running now (a peer set-up replaces it)
        if embedded is not None:
            await embedded.stop()


async def _unless_stopped(work: Coroutine[Any, Any, str], stop: asyncio.Event) -> str | None:
    """``work``'s result, or None once ``stop`` is set first (``work`` then cancelled): a member's
    etcd may wait minutes for its peers, and SIGTERM must not wait with it."""
    import asyncio

    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stopped):
            pending.cancel()
        await asyncio.wait({task, stopped})
    return None if task.cancelled() else task.result()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from pitrix import aio, logs

    logs.configure(args.log_level)
    sys.exit(aio.run(serve(args)))


if __name__ == "__main__":
    main()
