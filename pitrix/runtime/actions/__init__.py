"""Every lifecycle action, one file each; this registry is the one place that lists them.

Adding an action: write ``actions/<name>.py`` (an ``Action`` subclass: its states, arguments,
checks, plan and commit) and add its instance to ``ACTIONS`` below.
"""

from __future__ import annotations

from typing import Any

from pitrix.runtime.actions.backup import BackupAction
from pitrix.runtime.actions.base import Action
from pitrix.runtime.actions.create import Create
from pitrix.runtime.actions.delete import Delete
from pitrix.runtime.actions.recover import Recover
from pitrix.runtime.actions.relink import Relink
from pitrix.runtime.actions.resize import Resize
from pitrix.runtime.actions.restart import Restart
from pitrix.runtime.actions.run_service import RunService
from pitrix.runtime.actions.scale import SCALE_IN, SCALE_OUT
from pitrix.runtime.actions.start import Start
from pitrix.runtime.actions.stop import Stop
from pitrix.runtime.actions.update_env import UpdateEnv
from pitrix.runtime.actions.upgrade import Upgrade
from pitrix.runtime.lifecycle import Lifecycle

ACTIONS: tuple[Action[Any], ...] = (
    Create(),
    Stop(),
    Start(),
    SCALE_OUT,
    SCALE_IN,
    UpdateEnv(),
    Recover(),
    RunService(),
    Restart(),
    Delete(),
    Upgrade(),
    BackupAction(),
    Relink(),
    Resize(),
)

BY_NAME: dict[str, Action[Any]] = {action.name: action for action in ACTIONS}
# POST /v1/clusters/<id>/<verb>: the first action of each verb judges the request.
BY_VERB: dict[str, Action[Any]] = {
    verb: next(a for a in ACTIONS if a.verb == verb)
    for verb in dict.fromkeys(a.verb for a in ACTIONS if a.verb)
}
LIFECYCLE = Lifecycle([action.edge for action in ACTIONS])
TRANSITIONAL: list[str] = LIFECYCLE.transitional
