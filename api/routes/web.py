"""GET /: the page for the people who work with the classifier (classify, explain, review).

Plain HTML, CSS and JavaScript from ``api/web`` served by the app itself: no build step and
nothing fetched from elsewhere, so it works without internet. The page is public; the data
calls it makes carry the API key the user types (scopes checked by those routes as usual).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_URL = "/static"
# Only the app's own origin: a value the API returns can never pull in a script or style from elsewhere.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")

router = APIRouter(include_in_schema=False)  # a plain router: the JSON body limits of GuardedRoute do not apply


def web_dir() -> Path:
    return Path(str(files("api") / "web"))


@router.get("/")
async def page() -> FileResponse:
    """The web page (its data calls go to /model, /labels, /predict, /review)."""
    return FileResponse(web_dir() / "index.html", media_type="text/html",
                        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY,
                                 "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})


def mount_web(app: FastAPI) -> None:
    """Serve the page at / and its assets under STATIC_URL."""
    app.mount(STATIC_URL, StaticFiles(directory=web_dir()), name="web-static")
    app.include_router(router)
