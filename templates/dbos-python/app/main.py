"""hello: a DBOS Transact 3.x app with one durable workflow and an HTTP API.

Its environment is DBOS Cloud's: DBOS_APP_NAME, DBOS_DATABASE_URL, DBOS_SYSTEM_DATABASE_URL,
DBOS__APPVERSION, DBOS__VMID, PORT (the URLs carry no password: libpq reads PGPASSFILE).
"""

import os

import uvicorn
from dbos import DBOS, DBOSConfig
from fastapi import FastAPI

app = FastAPI()
config: DBOSConfig = {
    "name": os.environ.get("DBOS_APP_NAME", "hello"),
    "system_database_url": os.environ["DBOS_SYSTEM_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1),
}
DBOS(config=config)


@DBOS.step()
def shout(name: str) -> str:
    return name.upper()


@DBOS.workflow()
def hello(name: str) -> str:
    return f"Hello, {shout(name)}!"


@app.get("/")
def root() -> dict[str, str]:
    return {"app": config["name"], "version": os.environ.get("DBOS__APPVERSION", "")}


@app.get("/hello/{name}")
def say_hello(name: str) -> dict[str, str]:
    return {"greeting": hello(name)}


if __name__ == "__main__":
    DBOS.launch()
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), log_level="warning")
