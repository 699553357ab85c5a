"""Go ``text/template`` for pitrix-agent, so existing confd templates render byte for byte.

``parse(text, name, funcs)`` gives a ``Template``; ``Template.execute(data)`` renders it. confd's
functions (``getv``, ``lsdir``, ...) over an in-memory key space live in ``.confd``.
"""

from pitrix.agent.template.errors import TemplateError
from pitrix.agent.template.template import Template, parse
from pitrix.agent.template.values import KVPair

__all__ = ["KVPair", "Template", "TemplateError", "parse"]
