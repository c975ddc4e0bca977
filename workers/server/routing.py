"""Which targets a request's `model` means.

`provider:model` is that one target (`anthropic:` is an alias of `claude:`;
`mock:<anything>` works, so the front is testable offline); a route name
from the config (`[routes.fast] targets = [...]`) is its ordered fallback
chain. Anything else is a 404 `model_not_found`, as OpenAI answers.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Mapping, Sequence

from promptq.tasks.job import JobValidationError, Target

from .errors import ApiError


class Router:
    def __init__(self, routes: Mapping[str, Sequence[str]]):
        self.routes = {name: list(targets) for name, targets in routes.items()}
        self.created = int(time.time())

    def targets(self, model: Any, field: str = "model") -> List[str]:
        if not isinstance(model, str) or not model.strip():
            raise ApiError(400, f"{field}: required (a route name or 'provider:model')", param=field,
                           code="invalid_value")
        route = self.routes.get(model)
        if route is not None:
            return route
        if ":" not in model:
            known = ", ".join(sorted(self.routes)) or "none configured"
            raise ApiError(404, f"The model '{model}' does not exist: use a route ({known}) or 'provider:model'",
                           "not_found", param=field, code="model_not_found")
        try:
            return [str(Target.parse(model, field))]
        except JobValidationError as exc:
            raise ApiError(404, str(exc), "not_found", param=field, code="model_not_found") from None

    def models(self) -> Dict[str, Any]:
        """`GET /v1/models`: every route, then every target a route names."""
        data = [self._model(name, "promptq-route", targets=targets) for name, targets in sorted(self.routes.items())]
        seen = set()
        for targets in self.routes.values():
            for target in targets:
                if target not in seen and target not in self.routes:
                    seen.add(target)
                    data.append(self._model(target, target.split(":", 1)[0]))
        return {"object": "list", "data": data}

    def model(self, model_id: str) -> Dict[str, Any]:
        """`GET /v1/models/{id}`: a route, or any valid `provider:model`."""
        if model_id in self.routes:
            return self._model(model_id, "promptq-route", targets=self.routes[model_id])
        target = self.targets(model_id)[0]
        return self._model(model_id, target.split(":", 1)[0])

    def _model(self, model_id: str, owner: str, **extra: Any) -> Dict[str, Any]:
        return {"id": model_id, "object": "model", "created": self.created, "owned_by": owner, **extra}
