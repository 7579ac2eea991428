"""Request size limits of the server, shared by the app and the serve command."""

from __future__ import annotations

# Large enough for a status call on 100,000 item ids (about 3 MB) with room to spare.
DEFAULT_MAX_BODY_MB = 32

# The serve command passes its --max-body-mb to each uvicorn worker through this.
MAX_BODY_ENV = "LOCALSYNC_MAX_BODY_MB"
