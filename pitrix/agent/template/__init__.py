"""Go ``text/template`` for pitrix-agent, so existing confd templates render byte for byte.

``parse(text, name, funcs)`` gives a ``Template`` (parse once, cache it); ``Template.execute(data)``
renders it and raises ``TemplateError`` (``name:line:col: message``, line and column from 1) on
failure, never returning partial output. confd's functions over an in-memory key space live in
``.confd`` (``MemKV``, ``confd_funcs``).

Two things a caller should know. Output is a ``str`` whose undecodable bytes (a ``"\\xff"``
literal, ``base64Decode`` of binary data) are surrogate escapes: write it with
``encode("utf-8", "surrogateescape")`` to get Go's exact bytes. Execution is plain CPU work except
``lookupIP``/``lookupSRV``, which block on the resolver: run ``execute`` in a worker thread when a
template may use them.
"""

from pitrix.agent.template.errors import TemplateError
from pitrix.agent.template.template import Template, parse
from pitrix.agent.template.values import KVPair

__all__ = ["KVPair", "Template", "TemplateError", "parse"]
