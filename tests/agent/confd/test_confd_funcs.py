"""confd's functions over a MemKV: memkv's lookups, confd's helpers, and the libconfd extras."""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pitrix.agent.confdfuncs import confd_funcs
from pitrix.agent.memkv import MemKV
from pitrix.agent.netlookup import SRV, build_query, parse_srv_answer
from pitrix.gotemplate import KVPair, TemplateError, parse

TREE: dict[str, Any] = {
    "hosts": {
        "web": {
            "i-w1": {"ip": "127.100.0.11", "port": 8081},
            "i-w2": {"ip": "127.100.0.2", "port": 10},
            "i-w10": {"ip": "127.100.0.3", "port": 2},
        },
        "lb": {"i-l1": {"ip": "127.100.0.9"}},
    },
    "env": {
        "mode": "roundrobin",
        "n": "12",
        "f": "2.5",
        "flag": True,
        "ratio": 0.75,
        "big": 1e21,
        "servers": '[{"name": "a", "port": 1}, {"name": "b", "port": 2.5}]',
        "obj": '{"k": "v", "n": 12345678, "nested": {"x": [1, 2]}}',
        "b64": "aGVsbG8=",
        "csv": "a,b,,c",
        "none": None,
    },
    "list": ["x", "y", {"z": 1}],
    "top": "leaf",
}


@pytest.fixture
def kv() -> MemKV:
    return MemKV.from_tree(TREE)


def render(text: str, kv: MemKV, **kw: Any) -> str:
    return parse(text, "c.tmpl", confd_funcs(kv, **kw)).execute()


# -- flattening -------------------------------------------------------------------------------


def test_from_tree_flattens_like_file_backend(kv: MemKV) -> None:
    d = kv.as_dict()
    assert d["/hosts/web/i-w1/port"] == "8081"
    assert d["/env/flag"] == "true"
    assert d["/env/ratio"] == "0.75"
    assert d["/env/big"] == "1000000000000000000000"
    assert d["/list/0"] == "x" and d["/list/1"] == "y" and d["/list/2/z"] == "1"
    assert d["/top"] == "leaf"
    assert "/env/none" not in d


def test_from_tree_with_prefix() -> None:
    kv = MemKV.from_tree({"a": {"b": 1}}, prefix="/self")
    assert kv.as_dict() == {"/self/a/b": "1"}


def test_memkv_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="value of /a: must be a string"):
        MemKV({"/a": None})
    with pytest.raises(ValueError, match="value of /b: unsupported type dict"):
        MemKV({"/b": {"x": 1}})


def test_memkv_replace_rebinds_parsed_template(kv: MemKV) -> None:
    tmpl = parse('{{getv "/a"}}', "r.tmpl", confd_funcs(kv))
    kv.replace({"/a": "1"})
    assert tmpl.execute() == "1"
    kv.replace({"/a": "2"})
    assert tmpl.execute() == "2"


# -- memkv lookups ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{{getv "/env/mode"}}', "roundrobin"),
        ('{{getv "/env/nope" "dflt"}}', "dflt"),
        ('{{getv "/env/mode" "dflt"}}', "roundrobin"),
        ('{{getv "/env/nope" ""}}', ""),
        ('{{exists "/env/mode"}} {{exists "/env"}} {{exists "/env/nope"}}', "true false false"),
        ('{{(get "/env/mode").Key}}={{(get "/env/mode").Value}}', "/env/mode=roundrobin"),
        ('{{get "/env/mode"}}', "{/env/mode roundrobin}"),
        (
            '{{range gets "/hosts/web/*/port"}}{{.Key}}={{.Value}} {{end}}',
            "/hosts/web/i-w1/port=8081 /hosts/web/i-w10/port=2 /hosts/web/i-w2/port=10 ",
        ),
        ('{{getvs "/hosts/web/*/port"}}', "[10 2 8081]"),
        ('{{getvs "/hosts/*/*/ip"}}', "[127.100.0.11 127.100.0.2 127.100.0.3 127.100.0.9]"),
        ('{{gets "/nothing/*"}}', "[]"),
        ('{{getvs "/hosts/web/i-w?/ip"}}', "[127.100.0.11 127.100.0.2]"),
        ('{{getvs "/hosts/web/i-w[12]/ip"}}', "[127.100.0.11 127.100.0.2]"),
        ('{{getvs "/hosts/web/i-w[^1]/ip"}}', "[127.100.0.2]"),
        ('{{getvs "/hosts/*"}}', "[]"),
        ('{{ls "/hosts"}}', "[lb web]"),
        ('{{ls "/hosts/web/i-w1"}}', "[ip port]"),
        ('{{ls "/env/mode"}}', "[mode]"),
        ('{{ls "/"}}', "[top]"),
        ('{{ls "/nope"}}', "[]"),
        ('{{lsdir "/hosts"}}', "[lb web]"),
        ('{{lsdir "/hosts/web"}}', "[i-w1 i-w10 i-w2]"),
        ('{{lsdir "/hosts/web/i-w1"}}', "[]"),
        ('{{lsdir "/list"}}', "[2]"),
        ('{{ls "/list"}}', "[0 1 2]"),
        ('{{lsdir "/hosts/"}}', "[lb web]"),
    ],
)
def test_kv_functions(text: str, expected: str, kv: MemKV) -> None:
    assert render(text, kv) == expected


def test_getv_missing_key_error(kv: MemKV) -> None:
    with pytest.raises(TemplateError) as info:
        render('x\n  {{getv "/env/nope"}}', kv)
    assert str(info.value) == "c.tmpl:2:5: getv: key does not exist: /env/nope"


def test_get_missing_key_error(kv: MemKV) -> None:
    with pytest.raises(TemplateError, match="get: key does not exist: /nope"):
        render('{{get "/nope"}}', kv)


def test_gets_bad_pattern(kv: MemKV) -> None:
    with pytest.raises(TemplateError, match="gets: syntax error in pattern"):
        render('{{gets "/a/[b"}}', kv)


def test_getv_wants_string(kv: MemKV) -> None:
    with pytest.raises(TemplateError, match="getv: wrong type for value; expected string; got int"):
        render("{{getv 3}}", kv)


def test_getv_needs_a_key(kv: MemKV) -> None:
    with pytest.raises(TemplateError, match="wrong number of args for getv: want at least 1 got 0"):
        render("{{getv}}", kv)


# -- string and path helpers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{{base "/a/b/c"}}', "c"),
        ('{{base "/a/b/"}}', "b"),
        ('{{base ""}}', "."),
        ('{{base "/"}}', "/"),
        ('{{dir "/a/b/c"}}', "/a/b"),
        ('{{dir "/a"}}', "/"),
        ('{{dir "a"}}', "."),
        ('{{dir "/a//b/../c/"}}', "/a/c"),
        ('{{split "a,b,,c" ","}}', "[a b  c]"),
        ('{{split "abc" ""}}', "[a b c]"),
        ('{{split "" ","}}', "[]"),
        ('{{len (split "" ",")}}', "1"),
        ('{{join (split "a,b" ",") "-"}}', "a-b"),
        ('{{join (ls "/hosts") "|"}}', "lb|web"),
        ('{{toUpper "abc é ß"}}', "ABC É ß"),
        ('{{toLower "ABC É"}}', "abc é"),
        ('{{replace "aaa" "a" "b" 2}}', "bba"),
        ('{{replace "aaa" "a" "b" -1}}', "bbb"),
        ('{{replace "abc" "" "-" -1}}', "-a-b-c-"),
        ('{{contains "hello" "ell"}} {{contains "hello" "x"}}', "true false"),
        ('{{trimSuffix "file.conf" ".conf"}}', "file"),
        ('{{trimSuffix "file" ".conf"}}', "file"),
        ('{{base64Encode "hello"}}', "aGVsbG8="),
        ('{{base64Decode (getv "/env/b64")}}', "hello"),
        ('{{base64Decode "aGVs\\nbG8="}}', "hello"),
        ('{{parseBool "true"}} {{parseBool "0"}} {{parseBool "T"}}', "true false true"),
    ],
)
def test_string_functions(text: str, expected: str, kv: MemKV) -> None:
    assert render(text, kv) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{{base64Decode "a$=="}}', "base64Decode: illegal base64 data at input byte 1"),
        ('{{base64Decode "aGVsbG8"}}', "base64Decode: illegal base64 data"),
        ('{{parseBool "yes"}}', 'parseBool: strconv.ParseBool: parsing "yes": invalid syntax'),
        ('{{join "a" ","}}', "join: wrong type for value; expected []string; got string"),
        (
            '{{join (jsonArray "[1]") ","}}',
            "join: wrong type for value; expected []string; got []interface {}",
        ),
        ('{{replace "a" "a" "b" "1"}}', "replace: wrong type for value; expected int; got string"),
        ("{{split 1 2}}", "split: wrong type for value; expected string; got int"),
    ],
)
def test_string_function_errors(text: str, message: str, kv: MemKV) -> None:
    with pytest.raises(TemplateError) as info:
        render(text, kv)
    assert message in str(info.value)


# -- json, map, conversion, arithmetic ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{{range jsonArray (getv "/env/servers")}}{{.name}}:{{.port}} {{end}}', "a:1 b:2.5 "),
        ('{{$o := json (getv "/env/obj")}}{{$o.k}} {{$o.n}} {{$o.nested.x}}', "v 1.2345678e+07 [1 2]"),
        ('{{json "null"}}', "map[]"),
        ('{{jsonArray "[]"}}', "[]"),
        ('{{(json "{\\"a\\": true}").a}}', "true"),
        ('{{$m := map "a" 1 "b" "x"}}{{$m.a}}{{$m.b}} {{$m}}', "1x map[a:1 b:x]"),
        ("{{map}}", "map[]"),
        ('{{atoi "42"}} {{atoi "-7"}} {{atoi "+3"}}', "42 -7 3"),
        ('{{add (atoi (getv "/env/n")) 1}}', "13"),
        ("{{add 1 2}} {{sub 1 2}} {{mul 3 4}} {{div 7 2}} {{mod 7 3}}", "3 -1 12 3 1"),
        ("{{div -7 2}} {{mod -7 3}}", "-3 -1"),
        ('{{add "1" "2"}} {{add "1.5" 1}} {{mul "2" 2.5}}', "3 2.5 5"),
        ('{{add (getv "/env/n") 1}}', "13"),
        ('{{div (getv "/env/f") 2}}', "1.25"),
        ("{{max 3 5}} {{min 3 5}} {{max 1.5 1}} {{max 1000000 1}}", "5 3 1.5 1e+06"),
        ('{{max "2" "10"}}', "10"),
        ("{{seq 1 5}}", "[1 2 3 4 5]"),
        ("{{seq 3 1}}", "[]"),
        ("{{range seq 1 3}}{{.}}{{end}}", "123"),
        ('{{reverse (ls "/hosts")}}', "[web lb]"),
        ('{{range reverse (gets "/hosts/web/*/port")}}{{.Value}} {{end}}', "8081 2 10 "),
        (
            '{{range reverse (sortKVByLength (gets "/hosts/web/*/ip"))}}{{.Value}} {{end}}',
            "127.100.0.3 127.100.0.2 127.100.0.11 ",
        ),
        ('{{$s := split "a,b" ","}}{{$r := reverse $s}}{{$s}}', "[b a]"),
        ('{{printf "%T" (gets "/x")}} {{printf "%T" (ls "/")}}', "memkv.KVPairs []string"),
        ('{{reverse (jsonArray "[1,2]")}}', "[1 2]"),
        ('{{sortByLength (split "ccc,a,bb,dd" ",")}}', "[a bb dd ccc]"),
        ('{{range sortKVByLength (gets "/hosts/web/*/ip")}}{{base (dir .Key)}} {{end}}', "i-w1 i-w2 i-w10 "),
        (
            '{{filter "^127\\\\.100\\\\.0\\\\.[0-9]$" (getvs "/hosts/*/*/ip")}}',
            "[127.100.0.2 127.100.0.3 127.100.0.9]",
        ),
        ('{{range filter "^1" (gets "/hosts/web/*/port")}}{{.Key}} {{end}}', "/hosts/web/i-w2/port "),
        ('{{filter "x" (jsonArray "[1, \\"x\\"]")}}', "[x]"),
        # A backtracking engine takes ~2^40 steps here; RE2 (Go's engine) answers at once.
        ('{{filter "^(a+)+$" (split "' + "a" * 40 + '!,aa" ",")}}', "[aa]"),
        ('{{toJson (map "b" 1 "a" "<&>" "c" (seq 1 2))}}', '{"a":"\\u003c\\u0026\\u003e","b":1,"c":[1,2]}'),
        ('{{toJson (get "/env/mode")}}', '{"Key":"/env/mode","Value":"roundrobin"}'),
        ('{{toJson (json (getv "/env/obj"))}}', '{"k":"v","n":12345678,"nested":{"x":[1,2]}}'),
        ('{{toJson "x"}} {{toJson 1.5}} {{toJson true}}', '"x" 1.5 true'),
        ('{{toYaml (map "b" 1 "a" (split "x,y" ","))}}', "a:\n- x\n- y\nb: 1\n"),
        ('{{toYaml (json "{\\"n\\": 3, \\"f\\": 0.5}")}}', "f: 0.5\nn: 3\n"),
        ('{{toYaml (get "/env/mode")}}', "key: /env/mode\nvalue: roundrobin\n"),
        ('{{toYaml "x"}}', "x\n"),
    ],
)
def test_value_functions(text: str, expected: str, kv: MemKV) -> None:
    assert render(text, kv) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{{atoi "x"}}', 'atoi: strconv.Atoi: parsing "x": invalid syntax'),
        ('{{atoi "1.5"}}', 'atoi: strconv.Atoi: parsing "1.5": invalid syntax'),
        ('{{atoi " 1"}}', 'atoi: strconv.Atoi: parsing " 1": invalid syntax'),
        ('{{atoi "99999999999999999999"}}', "value out of range"),
        ('{{json "{"}}', "json: unexpected end of JSON input"),
        ('{{json "[1]"}}', "json: cannot unmarshal array into Go value of type map[string]interface {}"),
        (
            '{{jsonArray "{}"}}',
            "jsonArray: json: cannot unmarshal object into Go value of type []interface {}",
        ),
        ('{{json "NaN"}}', "json: invalid character 'N' looking for beginning of value"),
        ('{{map "a"}}', "map: invalid map call"),
        ("{{map 1 2}}", "map: map keys must be strings"),
        ("{{div 1 0}}", "div: integer divide by zero"),
        ("{{mod 1 0}}", "mod: integer divide by zero"),
        ("{{mod 1.5 1}}", "mod: modulo needs integer operands"),
        ('{{add "x" 1}}', 'add: can\'t apply the operator to the value "x": not a number'),
        ("{{add true 1}}", "add: can't apply the operator to the values"),
        ('{{seq "1" 2}}', "seq: wrong type for value; expected int; got string"),
        ('{{filter "(" (ls "/")}}', "filter: error parsing regexp: missing )"),
        # Go's regexp is RE2: no backreferences (and no catastrophic backtracking, below).
        ('{{filter "(a)\\\\1" (ls "/")}}', "filter: error parsing regexp: invalid escape sequence"),
        ('{{filter "x" "abc"}}', "filter: filter only support slice or array."),
        ('{{sortByLength "abc"}}', "sortByLength: wrong type for value; expected []string; got string"),
        ("{{toJson (div 1.0 0.5 | mul 1e308 | mul 10.0)}}", "toJson: json: unsupported value: +Inf"),
    ],
)
def test_value_function_errors(text: str, message: str, kv: MemKV) -> None:
    with pytest.raises(TemplateError) as info:
        render(text, kv)
    assert message in str(info.value)


# -- environment, files, time -----------------------------------------------------------------


def test_getenv_with_and_without_default(kv: MemKV) -> None:
    env = {"PRESENT": "yes", "EMPTY": ""}
    out = render(
        '{{getenv "PRESENT"}}|{{getenv "MISSING"}}|{{getenv "MISSING" "d"}}|{{getenv "EMPTY" "d"}}',
        kv,
        environ=env,
    )
    assert out == "yes||d|d"


def test_getenv_reads_process_environment(kv: MemKV, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PITRIX_TMPL_TEST", "from-env")
    assert render('{{getenv "PITRIX_TMPL_TEST"}}', kv) == "from-env"


def test_file_exists_under_root(kv: MemKV, tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "app.conf").write_text("x")
    out = render(
        '{{fileExists "/etc/app.conf"}} {{fileExists "/etc/none"}} {{fileExists "/etc/app.conf/x"}}',
        kv,
        root=str(tmp_path),
    )
    assert out == "true false false"


def test_file_exists_absolute(kv: MemKV, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    assert render(f'{{{{fileExists "{path}"}}}}', kv) == "true"


def test_datetime_format(kv: MemKV) -> None:
    out = render('{{(datetime).Format "2006-01-02T15:04:05Z07:00"}}|{{datetime.Year}}', kv)
    stamp, year = out.split("|")
    import datetime as dt

    now = dt.datetime.now().astimezone()
    parsed = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert abs((now - parsed).total_seconds()) < 5
    assert int(year) == now.year


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("2006-01-02 15:04:05", "2009-11-10 23:04:05"),
        ("Jan _2 3:4:5 PM", "Nov 10 11:4:5 PM"),
        ("Monday, 02-Jan-06", "Tuesday, 10-Nov-09"),
        ("January 2, 2006", "November 10, 2009"),
        ("15:04:05.000", "23:04:05.123"),
        ("15:04:05.999999", "23:04:05.123"),
        ("-0700 -07:00 Z07:00 MST", "+0000 +00:00 Z UTC"),
        ("002 __2", "314 314"),
    ],
)
def test_go_time_layouts(layout: str, expected: str) -> None:
    import datetime as dt

    from pitrix.gotemplate.gotime import GoTime

    t = GoTime(dt.datetime(2009, 11, 10, 23, 4, 5, 123000, tzinfo=dt.UTC))
    assert t.Format(layout) == expected


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("15:04:05", "07:08:09"),
        ("3:4:5 pm", "7:8:9 am"),
        ("03:04:05 PM", "07:08:09 AM"),
        ("1/2/06 _2", "2/3/01  3"),
    ],
)
def test_go_time_layouts_pad_as_go_does(layout: str, expected: str) -> None:
    """Single-digit fields: the 24-hour "15" is always two digits, "3", "4", "5", "1" and "2" never."""
    import datetime as dt

    from pitrix.gotemplate.gotime import GoTime

    t = GoTime(dt.datetime(2001, 2, 3, 7, 8, 9, tzinfo=dt.UTC))
    assert t.Format(layout) == expected


# -- name lookups -----------------------------------------------------------------------------


def test_lookup_ip_localhost(kv: MemKV) -> None:
    out = render('{{range lookupIPV4 "localhost"}}{{.}} {{end}}', kv)
    assert "127.0.0.1" in out.split()


def test_lookup_ip_all_sorted(kv: MemKV) -> None:
    addrs = parse('{{lookupIP "localhost"}}', "l", confd_funcs(kv)).execute()
    items = addrs.strip("[]").split()
    assert items == sorted(items) and "127.0.0.1" in items


def test_lookup_ipv6_only_colons(kv: MemKV) -> None:
    out = render('{{range lookupIPV6 "localhost"}}{{.}} {{end}}', kv)
    assert all(":" in a for a in out.split())


def test_lookup_bad_name_is_empty(kv: MemKV) -> None:
    """A name the resolver rejects gives no addresses, not an error (as confd); no query leaves the host."""
    assert render('{{lookupIP "a..b"}} {{len (lookupIPV4 "")}}', kv) == "[] 0"


def _srv_answer(query: bytes, records: list[tuple[int, int, int, str]]) -> bytes:
    ident = struct.unpack("!H", query[:2])[0]
    qend = 12
    while query[qend] != 0:
        qend += query[qend] + 1
    question = query[12 : qend + 5]
    answer = b""
    for prio, weight, port, target in records:
        rdata = struct.pack("!HHH", prio, weight, port)
        for label in target.rstrip(".").split("."):
            rdata += bytes([len(label)]) + label.encode()
        rdata += b"\x00"
        answer += b"\xc0\x0c" + struct.pack("!HHIH", 33, 1, 60, len(rdata)) + rdata
    header = struct.pack("!HHHHHH", ident, 0x8180, 1, len(records), 0, 0)
    return header + question + answer


@pytest.fixture
def dns_server() -> Iterator[tuple[tuple[str, int], list[bytes]]]:
    """A one-zone DNS server on 127.0.0.1 that answers SRV questions for _ldap._tcp.example.test."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        while True:
            query, peer = sock.recvfrom(512)
            if query == b"stop":
                return
            seen.append(query)
            if b"\x05_ldap\x04_tcp\x07example\x04test\x00" in query:
                records = [
                    (10, 5, 389, "b.example.test."),
                    (10, 5, 389, "a.example.test."),
                    (20, 1, 636, "a.example.test."),
                ]
            else:
                records = []
            sock.sendto(_srv_answer(query, records), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname(), seen
    finally:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as waker:
            waker.sendto(b"stop", sock.getsockname())
        thread.join(timeout=5)
        sock.close()


def test_lookup_srv_against_local_dns(kv: MemKV, dns_server: tuple[tuple[str, int], list[bytes]]) -> None:
    server, seen = dns_server
    out = render(
        '{{range lookupSRV "ldap" "tcp" "example.test"}}'
        "{{.Target}}:{{.Port}}/{{.Priority}}/{{.Weight}} {{end}}",
        kv,
        nameservers=[server],
    )
    assert out == "a.example.test.:389/10/5 a.example.test.:636/20/1 b.example.test.:389/10/5 "
    assert len(seen) == 1


def test_lookup_srv_no_records(kv: MemKV, dns_server: tuple[tuple[str, int], list[bytes]]) -> None:
    server, _ = dns_server
    assert render('{{len (lookupSRV "x" "udp" "none.test")}}', kv, nameservers=[server]) == "0"


def test_lookup_srv_nobody_answers(kv: MemKV) -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    addr = closed.getsockname()
    closed.close()
    assert render('{{lookupSRV "a" "tcp" "b.test"}}', kv, nameservers=[addr]) == "[]"


def test_srv_wire_format_round_trip() -> None:
    query = build_query("_x._tcp.example.test", 33, 0x1234)
    reply = _srv_answer(query, [(1, 2, 3, "t.example.test.")])
    assert parse_srv_answer(reply, 0x1234) == [SRV("t.example.test.", 3, 1, 2)]
    with pytest.raises(ValueError):
        parse_srv_answer(reply, 0x9999)


def test_kvpair_public() -> None:
    assert KVPair("/a", "b") == KVPair("/a", "b")
    assert os.fspath(Path("/")) == "/"


def test_large_cluster_renders() -> None:
    """20,000 keys, 400 nodes listed and looked up (the render time is bench/agent.py's figure)."""
    values = {
        f"/hosts/role{r}/i-{i:04d}/{f}": f"{f}-{i}"
        for r in range(5)
        for i in range(400)
        for f in ("ip", "port", "weight", "sid", "gid", "node_id", "cpu", "memory", "status", "role")
    }
    kv = MemKV(values)
    tmpl = parse(
        '{{range $id := lsdir "/hosts/role1"}}{{getv (printf "/hosts/role1/%s/ip" $id)}}\n{{end}}'
        '{{len (getvs "/hosts/role2/*/ip")}} {{len (ls "/hosts")}}',
        "big.tmpl",
        confd_funcs(kv),
    )
    out = tmpl.execute()
    assert out.count("\n") == 400 and out.endswith("400 5")
    assert out.startswith("ip-0\nip-1\n")
    assert tmpl.execute() == out  # the index stays right across renders
