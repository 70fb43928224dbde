"""The routes, one place for both ends (path segments are not URL-encoded by the official CLI; names
are ``[a-z0-9_]`` so it does not matter)."""

from __future__ import annotations

PREFIX = "/v1alpha1"

PROFILE = f"{PREFIX}/user/profile"
DATABASES = PREFIX + "/{org}/databases"                                  # GET list
PROVISION = PREFIX + "/{org}/databases/userdb"                           # POST
DB_INFO = PREFIX + "/{org}/databases/userdb/info/{name}"                 # GET
DB = PREFIX + "/{org}/databases/userdb/{name}"                           # DELETE; PATCH (extension)
DB_CREDENTIALS = PREFIX + "/{org}/databases/userdb/{name}/credentials"   # POST
DB_RESTORE = PREFIX + "/{org}/databases/userdb/{name}/restore"           # POST
DB_BACKUP = PREFIX + "/{org}/databases/userdb/{name}/backup"             # POST (extension)
DB_START = PREFIX + "/{org}/databases/userdb/{name}/start"               # POST (extension)
DB_STOP = PREFIX + "/{org}/databases/userdb/{name}/stop"                 # POST (extension)
DB_DRILLS = PREFIX + "/{org}/databases/userdb/{name}/drills"               # GET list; POST run one (extension)
DB_PREFLIGHT = PREFIX + "/{org}/databases/preflight"                     # POST (extension)
LINK = PREFIX + "/{org}/databases/byod"                                  # POST
UNLINK = PREFIX + "/{org}/databases/byod/{name}"                         # DELETE

APPS = PREFIX + "/{org}/applications"                                    # GET list; PUT register
APP = PREFIX + "/{org}/applications/{app}"                               # GET; POST deploy; PATCH; DELETE
APP_CHANGE_DB = PREFIX + "/{org}/applications/{app}/changedbinstance"    # POST
APP_VERSIONS = PREFIX + "/{org}/applications/{app}/versions"             # GET
APP_SECRETS = PREFIX + "/{org}/applications/secrets"                     # POST
APP_SECRET_LIST = PREFIX + "/{org}/applications/{app}/secrets"           # GET
APP_SECRET = PREFIX + "/{org}/applications/{app}/secrets/{secret}"       # DELETE (expects 204)
APP_LOGS = PREFIX + "/{org}/logs/applications/{app}"                     # GET
