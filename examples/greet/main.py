"""greet: a DBOS Transact 3.x app — a durable workflow (two steps around a durable sleep), an HTTP API.

The environment is DBOS Cloud's: DBOS_APP_NAME, DBOS_DATABASE_URL (the app's tables),
DBOS_SYSTEM_DATABASE_URL (DBOS's tables), DBOS__APPVERSION, DBOS__VMID, PORT. The URLs carry no
password; libpq reads it from PGPASSFILE (or PGPASSWORD).
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
import uvicorn
from dbos import DBOS, DBOSConfig
from fastapi import FastAPI

# Shown by GET /: a code change is a new version.
GREETING = "Hello"


def sa_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


app = FastAPI()
config: DBOSConfig = {
    "name": os.environ.get("DBOS_APP_NAME", "greet"),
    "system_database_url": sa_url(os.environ["DBOS_SYSTEM_DATABASE_URL"]),
    "notification_listener_polling_interval_sec": 0.1,
}
DBOS(config=config)
engine = sa.create_engine(sa_url(os.environ["DBOS_DATABASE_URL"]), pool_pre_ping=True)


@DBOS.step()
def record(name: str, status: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO greetings (name, status) VALUES (:n, :s)"), {"n": name, "s": status})


@DBOS.workflow()
def greet(name: str, delay: float) -> str:
    record(name, "started")
    DBOS.sleep(delay)  # durable: after a restart, only the rest of the delay is waited
    record(name, "done")
    return f"{GREETING}, {name}!"


@app.get("/")
def root() -> dict[str, Any]:
    return {"app": config["name"], "version": os.environ.get("DBOS__APPVERSION", ""), "greeting": GREETING}


@app.post("/greet/{name}")
def start(name: str, delay: float = 0) -> dict[str, str]:
    handle = DBOS.start_workflow(greet, name, delay)
    return {"workflow_id": handle.get_workflow_id()}


@app.get("/workflows/{workflow_id}")
def status(workflow_id: str) -> dict[str, Any]:
    st = DBOS.get_workflow_status(workflow_id)
    return {"workflow_id": workflow_id, "status": st.status if st else None,
            "app_version": st.app_version if st else None}


@app.get("/greetings")
def greetings() -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT name, status FROM greetings ORDER BY id")).all()
    return [{"name": n, "status": s} for n, s in rows]


if __name__ == "__main__":
    DBOS.launch()
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), log_level="warning")
