"""Who may call what (pure): the roles, the one permission table, and the decision for a request.

Roles are ordered, each including the ones before it: reader < deployer < admin. A request falls in
one access class, looked up by method and path; with access control on (an --admin-token or
--require-api-key), a class names the least role that may call it:

| class    | what                                                            | needs                           |
|----------|-----------------------------------------------------------------|---------------------------------|
| open     | health, readiness, /metrics, /openapi.json                      | nothing, ever (probes, scrapes) |
| public   | inference, model metadata, /monitoring, MLflow reads, feature   | reader with --require-api-key,  |
|          | reads                                                           | else nothing                    |
| reader   | reads of /admin/* (routes, audit, lineage, views, rollouts)     | reader                          |
| deployer | route changes, rollouts, promotions (MLflow alias set/delete,   | deployer                        |
|          | stage transitions)                                              |                                 |
| admin    | every other write: feature views and pushes, model registration,| admin                           |
|          | MLflow experiment/run/model writes incl. tracking (log-metric,  |                                 |
|          | log-batch), artifact uploads, token management                  |                                 |

Tracking writes sit with admin: a training job that logs metrics also creates its run, uploads
artifacts and registers the model, which are admin writes anyway; a lower role for log-* alone would
give such a job nothing it could use.
"""

from __future__ import annotations

from typing import Literal, get_args

Role = Literal["reader", "deployer", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)  # in order: each includes the ones before
Access = Literal["open", "public", "reader", "deployer", "admin"]

MLFLOW = "/api/2.0/mlflow/"
ARTIFACTS = "/api/2.0/mlflow-artifacts/"
READ_METHODS = frozenset({"GET", "HEAD"})
OPEN_PATHS = frozenset({"/health", "/metrics", "/openapi.json", "/v2/health/live", "/v2/health/ready"})
# MLflow reads sent as POST (the client searches with a JSON body).
MLFLOW_POST_READS = frozenset({
    "experiments/search", "runs/search", "registered-models/get-latest-versions", "logged-models/search",
})
# Promotions: what moves traffic between versions of a registered model.
MLFLOW_PROMOTIONS = frozenset({"registered-models/alias", "model-versions/transition-stage"})
# /admin writes a deployer may make; every other /admin write is admin's.
DEPLOYER_ADMIN_PREFIXES = ("/admin/routes/", "/admin/rollouts")


RANK: dict[str, int] = {role: i for i, role in enumerate(ROLES)}


def rank(role: Role) -> int:
    return RANK[role]


def parse_role(text: str) -> Role:
    """`text` as a Role. Raises ValueError naming the roles."""
    for role in ROLES:
        if text == role:
            return role
    raise ValueError(f"role must be one of {', '.join(ROLES)}, got {text!r}")


def access_for(method: str, path: str) -> Access:
    """The access class of a request (inference paths are 'public'; unknown paths 'public' to read,
    'admin' to write, so a new endpoint is closed until someone places it)."""
    read = method in READ_METHODS
    if path in OPEN_PATHS:
        return "open"
    if path.startswith("/admin/") or path == "/admin":
        if read:
            return "reader"
        return "deployer" if path.startswith(DEPLOYER_ADMIN_PREFIXES) else "admin"
    if path.startswith(MLFLOW):
        endpoint = path[len(MLFLOW):]
        if read or (method == "POST" and endpoint in MLFLOW_POST_READS):
            return "public"
        return "deployer" if endpoint in MLFLOW_PROMOTIONS else "admin"
    if path.startswith(ARTIFACTS):
        return "public" if read else "admin"
    if path == "/features/get-online-features":
        return "public"
    if read or path.startswith(("/v1/models/", "/v2/models/")):  # metadata, monitoring; v1 predict, v2 infer
        return "public"
    return "admin"


def required_role(access: Access, require_api_key: bool) -> Role | None:
    """The least role a request of this class needs, or None when it needs no token.
    Call only with access control on; with it off, nothing needs a token."""
    if access == "open" or (access == "public" and not require_api_key):
        return None
    return "reader" if access == "public" else access


def allows(role: Role, needed: Role) -> bool:
    return RANK[role] >= RANK[needed]


def bearer_token(header: bytes | None) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive), else None."""
    if not header:
        return None
    scheme, _, value = header.partition(b" ")
    value = value.strip()
    if scheme.lower() != b"bearer" or not value:
        return None
    return value
