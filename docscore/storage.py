"""Where data lives: a path or URI → a ``pyarrow.fs`` file system and a path on it.

Local paths and ``file://`` are the local disk; ``s3://``, ``gs://``, ``abfs://`` and ``hdfs://`` go through
``pyarrow.fs``; any other scheme goes through fsspec when it is installed. Credentials always come from each store's
standard chain (environment, config files, instance metadata); a URI carrying a password or a secret query
parameter is refused, so none ends up in logs, summaries or manifests.

An S3-compatible store's endpoint comes from, in order: the URI's ``endpoint_override`` query parameter
(``s3://bucket/x?endpoint_override=http://127.0.0.1:9000``), the ``--s3-endpoint`` option, or the standard
``AWS_ENDPOINT_URL`` environment variable. A GCS endpoint from the URI's ``endpoint_override`` (and ``scheme``)
query parameters or the standard ``STORAGE_EMULATOR_HOST`` (an emulator: anonymous, as Google's SDKs do). Azure
Blob (``az://container/path``, ``abfs[s]://container/path``, ``abfs[s]://container@ACCOUNT.dfs.core.windows.net/path``):
the account and its endpoint and key from the standard ``AZURE_STORAGE_CONNECTION_STRING``, else the account from
the URI or ``AZURE_STORAGE_ACCOUNT_NAME`` with Azure's default credential chain.

Object stores have no rename and no append: :func:`write_bytes` writes a whole object in one PUT (atomic),
:func:`upload` copies a finished local file to its final key (a multipart upload becomes visible only when
completed), and :func:`create_exclusive` is a conditional write (``If-None-Match: *`` on S3 and Azure Blob,
``ifGenerationMatch=0`` on GCS), sent through the store's own SDK, since ``pyarrow.fs`` cannot send one.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pyarrow.fs as pafs

from docscore.errors import ConfigError

# A query parameter is taken for a credential when its name, lower-cased with "-" as "_", contains one of these
# words (aws_secret_access_key, X-Amz-Signature, X-Amz-Credential, x-goog-signature, account_key, ...) or is one
# of the short names (Azure SAS ``sig``). Only a few harmless names are ever read from a query (_S3_QUERY).
_SECRET_WORDS = ("secret", "password", "passwd", "token", "key", "signature", "credential", "auth",
                 "connection_string")
_SECRET_NAMES = ("sig", "pwd", "sas", "sv", "se", "sp", "skoid", "sktid")
_AZURE = ("abfs", "abfss", "az")
_S3_QUERY = ("endpoint_override", "region", "scheme")


@dataclass(frozen=True)
class Location:
    """A directory or file: its file system, its path on it, and the URI to show (never with credentials)."""

    fs: pafs.FileSystem = field(compare=False, repr=False)
    path: str
    uri: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, rel: str) -> str:
        """The file-system path of ``rel`` below this location."""
        return self.path.rstrip("/") + "/" + rel if rel else self.path

    def uri_of(self, path: str) -> str:
        """The URI to show for a path on this location's file system."""
        if self.is_local:
            return path
        scheme = self.uri.split("://", 1)[0]
        return f"{scheme}://{path}"

    def __str__(self) -> str:
        return self.uri


def is_secret_name(name: str) -> bool:
    """Whether a URI query parameter's name says it carries a credential."""
    key = name.strip().lower().replace("-", "_")
    return key in _SECRET_NAMES or any(word in key for word in _SECRET_WORDS)


def check_endpoint(endpoint: str, what: str) -> None:
    """Refuse an endpoint (``http://host:port``) that carries a user, a password or a secret query parameter.

    Raises:
        ConfigError: naming ``what`` (the option or URI it came from), never the credential.
    """
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    try:
        userinfo = parts.username or parts.password
    except ValueError:  # a malformed port: the store's own error names it later
        userinfo = None
    if userinfo or "@" in parts.netloc or any(is_secret_name(k) for k, _ in parse_qsl(parts.query)):
        raise ConfigError(f"{what} carries credentials; an endpoint is only scheme://host:port — credentials come "
                          "from the store's standard chain (environment variables, config files, instance roles)")


def has_scheme(uri: str | os.PathLike) -> bool:
    text = str(uri)
    return "://" in text and text.split("://", 1)[0].isidentifier()


def resolve(uri: str | os.PathLike, endpoint: str | None = None) -> Location:
    """The file system and path of ``uri`` (a local path, ``file://``, ``s3://``, ``gs://``, ...).

    Args:
        uri: where the data lives.
        endpoint: an S3-compatible endpoint (``http://host:port``) when the URI names none.

    Raises:
        ConfigError: a scheme no installed library handles, or credentials inside the URI.
    """
    text = str(uri)
    if not has_scheme(text):
        return Location(pafs.LocalFileSystem(), os.path.abspath(text), os.path.abspath(text))
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    query = dict(parse_qsl(parts.query))
    shown = f"{scheme}://{parts.hostname or ''}{parts.path}"
    # on Azure the user part names the container (abfs://container@account...), never a credential
    userinfo_secret = parts.password or (parts.username and scheme in ("s3", "s3a", "gs", "gcs"))
    if userinfo_secret or any(is_secret_name(k) for k in query):
        raise ConfigError(f"{shown}: credentials are never taken from a URI; use the store's standard credential "
                          "chain (environment variables, config files, instance roles)")
    for name in ("endpoint_override",):
        if name in query:
            check_endpoint(query[name], f"{shown}: its {name}")
    if endpoint:
        check_endpoint(endpoint, "--s3-endpoint")
    if scheme == "file":
        path = os.path.abspath(parts.path)
        return Location(pafs.LocalFileSystem(), path, path)
    if scheme in ("s3", "s3a"):
        return _s3(parts.netloc + parts.path, query, endpoint, f"s3://{parts.netloc}{parts.path}")
    if scheme in _AZURE:
        return _azure(parts, query, shown)
    if scheme in ("gs", "gcs"):
        text = text.replace(f"{parts.scheme}://", "gs://", 1)
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except ValueError as e:  # pyarrow's ArrowInvalid
        if "Unrecognized filesystem type" not in str(e):
            raise ConfigError(f"cannot open {shown}: {_one_line(e)}") from e
        fs, path = _fsspec(text, shown)
    except OSError as e:
        raise ConfigError(f"cannot open {shown}: {_one_line(e)}") from e
    if isinstance(fs, pafs.GcsFileSystem) and "endpoint_override" not in query:
        fs = _gcs_emulator(fs)
    return Location(fs, path.rstrip("/") or path, shown.rstrip("/") or shown)


def _gcs_emulator(fs: pafs.FileSystem) -> pafs.FileSystem:
    """``fs`` pointed at ``STORAGE_EMULATOR_HOST`` when it is set (anonymous, as google-cloud-storage does)."""
    host = os.environ.get("STORAGE_EMULATOR_HOST", "").strip().rstrip("/")
    if not host:
        return fs
    scheme, _, authority = host.rpartition("://")
    options = {**fs.__reduce__()[1][0], "anonymous": True, "endpoint_override": authority,
               "scheme": scheme or "http", "access_token": None, "credential_token_expiration": None}
    return pafs.GcsFileSystem(**{k: v for k, v in options.items() if v not in (None, "")})


def _connection_string() -> dict:
    raw = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "")
    return {k.strip().lower(): v.strip() for k, _, v in (kv.partition("=") for kv in raw.split(";")) if k.strip()}


def _azure(parts, query: dict, shown: str) -> Location:
    """An ``AzureFileSystem`` for ``az://container/path``, ``abfs[s]://container/path`` or
    ``abfs[s]://container@ACCOUNT.dfs.core.windows.net/path`` (or ``.blob.``); credentials from
    ``AZURE_STORAGE_CONNECTION_STRING`` or Azure's default chain, never from the URI."""
    host = parts.hostname or ""
    if parts.username:  # abfs://container@account.dfs.core.windows.net/path
        container, account = parts.username, host.split(".", 1)[0]
        suffix = host.split(".", 2)[2] if host.count(".") >= 2 else ""
    elif "." not in host:  # az://container/path (adlfs's form)
        container, account, suffix = host, None, ""
    else:
        raise ConfigError(f"{shown}: name an Azure Blob location as az://container/path or "
                          "abfs://container@ACCOUNT.dfs.core.windows.net/path")
    conn = _connection_string()
    if account is None:
        account = conn.get("accountname") or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
    if not account or not container:
        raise ConfigError(f"{shown}: which storage account? Name it in the URI "
                          "(abfs://container@ACCOUNT.dfs.core.windows.net/path) or set AZURE_STORAGE_ACCOUNT_NAME "
                          "or AZURE_STORAGE_CONNECTION_STRING")
    kwargs: dict = {}
    if conn.get("accountname") == account:
        if conn.get("accountkey"):
            kwargs["account_key"] = conn["accountkey"]
        elif conn.get("sharedaccesssignature"):
            kwargs["sas_token"] = conn["sharedaccesssignature"]
        scheme = conn.get("defaultendpointsprotocol") or "https"
        endpoint = conn.get("blobendpoint")
        if endpoint:  # e.g. an emulator's http://127.0.0.1:10000/devstoreaccount1
            ep = urlsplit(endpoint)
            scheme, ep_host = ep.scheme or scheme, ep.netloc
            authority = ep_host[len(account):] if ep_host.startswith(account + ".") else ep_host
        else:
            authority = ".blob." + (conn.get("endpointsuffix") or "core.windows.net")
        kwargs.update(blob_storage_authority=authority, blob_storage_scheme=scheme,
                      dfs_storage_authority=authority.replace(".blob.", ".dfs.", 1), dfs_storage_scheme=scheme)
    elif suffix and suffix != "core.windows.net":
        kwargs.update(blob_storage_authority=f".blob.{suffix}", dfs_storage_authority=f".dfs.{suffix}")
    if query.get("enable_tls", "").lower() in ("false", "0"):
        kwargs.update(blob_storage_scheme="http", dfs_storage_scheme="http")
    try:
        fs = pafs.AzureFileSystem(account, **kwargs)
    except (ValueError, OSError) as e:
        raise ConfigError(f"cannot open {shown}: {_one_line(e)}") from e
    path = (container + parts.path).rstrip("/")
    return Location(fs, path, f"{parts.scheme.lower()}://{path}")


def _s3(path: str, query: dict, endpoint: str | None, shown: str) -> Location:
    endpoint = query.get("endpoint_override") or endpoint or os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict = {"allow_bucket_creation": False, "connect_timeout": 5.0, "request_timeout": 30.0,
                    "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3)}
    region = query.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    elif endpoint:
        kwargs["region"] = "us-east-1"  # S3-compatible stores ignore it; saves a region lookup
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        if endpoint.startswith("http://"):
            kwargs["scheme"] = "http"
    if query.get("scheme"):
        kwargs["scheme"] = query["scheme"]
    path = path.rstrip("/")
    return Location(pafs.S3FileSystem(**kwargs), path, shown.rstrip("/"))


def _fsspec(uri: str, shown: str):
    try:
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem
    except ImportError as e:
        raise ConfigError(f"{shown}: pyarrow cannot open this scheme and fsspec is not installed "
                          "(pip install fsspec and the scheme's package, e.g. gcsfs, adlfs)") from e
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as e:
        raise ConfigError(f"{shown}: no library handles this scheme: {_one_line(e)}") from e
    return PyFileSystem(FSSpecHandler(fs)), path


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def explain(e: BaseException) -> str:
    """A store's error on one line, with a hint where the cause is usually the endpoint."""
    text = _one_line(e)
    if any(s in text for s in ("NETWORK_CONNECTION", "Could not connect", "Could not resolve host")):
        text += ("; check the endpoint (--s3-endpoint, the URI's endpoint_override, AWS_ENDPOINT_URL, "
                 "STORAGE_EMULATOR_HOST or AZURE_STORAGE_CONNECTION_STRING) and the network")
    return text


def missing_bucket(loc: Location) -> str | None:
    """The bucket of an object-store location when it does not exist (None when it does, or on a local disk)."""
    if loc.is_local:
        return None
    bucket = loc.path.split("/", 1)[0]
    return bucket if loc.fs.get_file_info(bucket).type == pafs.FileType.NotFound else None


def s3_options(fs: pafs.FileSystem) -> dict | None:
    """The constructor options of an ``S3FileSystem`` (endpoint, region, scheme), or None for another store."""
    if not isinstance(fs, pafs.S3FileSystem):
        return None
    return dict(fs.__reduce__()[1][0])


# --- whole-object primitives --------------------------------------------------------------------------------


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.File


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes | None:
    """The whole file, or None when it does not exist."""
    if not is_file(fs, path):
        return None
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(fs: pafs.FileSystem | None, path: str | os.PathLike, data: bytes, private_tmp: bool = False) -> None:
    """Replace a file whole: readers see the old or the new content, never a mix (a rename on a local disk, one PUT
    on an object store). docscore's one atomic writer: run manifests, bundle manifests, reports, caches.

    Args:
        fs: ``None`` for the local disk.
        private_tmp: on a local disk, write through a temporary name of this process's own (for files that several
            processes may write at once, such as a cache); otherwise ``<path>.tmp``, which the next write replaces.
    """
    fs = fs or pafs.LocalFileSystem()
    path = str(path)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp" if private_tmp else path + ".tmp"
        try:
            Path(tmp).parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            if private_tmp:
                Path(tmp).unlink(missing_ok=True)
            e.filename = e.filename or tmp
            raise
        return
    with fs.open_output_stream(path) as f:
        f.write(data)


def delete(fs: pafs.FileSystem, path: str) -> None:
    """Remove a file if it exists."""
    try:
        if is_file(fs, path):
            fs.delete_file(path)
    except FileNotFoundError:
        pass


def upload(local_path: str, fs: pafs.FileSystem, path: str) -> None:
    """Copy a finished local file to ``path`` on ``fs`` (its final key: visible only once whole) and check its size;
    the local file is then removed."""
    put_file(local_path, fs, path)
    os.unlink(local_path)


def put_file(local_path: str, fs: pafs.FileSystem, path: str) -> None:
    """Copy a local file to ``path`` on ``fs`` (one PUT or multipart upload: visible only once whole) and check
    its size."""
    size = os.path.getsize(local_path)
    pafs.copy_files(local_path, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    info = fs.get_file_info(path)
    if info.size != size:
        delete(fs, path)
        raise OSError(f"upload of {path} ended with {info.size} of {size} bytes")


def create_exclusive(fs: pafs.FileSystem, path: str, data: bytes) -> bool:
    """Create ``path`` with ``data`` unless it exists; False when it does. Atomic: of two writers, one wins.

    A local disk uses ``O_CREAT | O_EXCL``; object stores a conditional write through the store's SDK, since
    ``pyarrow.fs`` cannot send one: S3 a PUT with ``If-None-Match: *`` (boto3), GCS an upload with
    ``ifGenerationMatch=0`` (google-cloud-storage), Azure Blob a PUT with ``If-None-Match: *`` (azure-storage-blob).
    Other stores (HDFS, fsspec's) raise :class:`ConfigError` (see README, "Object storage").
    """
    if isinstance(fs, pafs.LocalFileSystem):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True
    if isinstance(fs, pafs.GcsFileSystem):
        return _gcs_create_exclusive(_options(fs), path, data)
    if isinstance(fs, pafs.AzureFileSystem):
        return _azure_create_exclusive(_options(fs), path, data)
    options = s3_options(fs)
    if options is None:
        raise ConfigError(f"{type(fs).__name__}: docscore's one-writer lock needs a conditional write "
                          "(If-None-Match), which docscore implements for local disks, S3, GCS and Azure Blob only")
    try:
        from botocore.exceptions import ClientError
    except ImportError as e:
        raise ConfigError("the one-writer lock on S3 is a conditional PUT, sent through boto3: "
                          "pip install 'docscore[s3]'") from e
    bucket, _, key = path.partition("/")
    try:
        _s3_client(options).put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
            return False
        raise OSError(f"cannot create s3://{path}: {code or _one_line(e)}") from e
    return True


def _options(fs: pafs.FileSystem) -> dict:
    return dict(fs.__reduce__()[1][0])


def _gcs_create_exclusive(options: dict, path: str, data: bytes) -> bool:
    try:
        from google.api_core.exceptions import GoogleAPIError, PreconditionFailed
    except ImportError as e:
        raise ConfigError("the one-writer lock on GCS is a conditional upload (ifGenerationMatch=0), sent through "
                          "google-cloud-storage: pip install 'docscore[gcs]'") from e
    bucket, _, key = path.partition("/")
    try:
        _gcs_client(options).bucket(bucket).blob(key).upload_from_string(data, if_generation_match=0, timeout=30)
    except PreconditionFailed:
        return False
    except GoogleAPIError as e:
        raise OSError(f"cannot create gs://{path}: {_one_line(e)}") from e
    return True


def _gcs_client(options: dict):
    """A google-cloud-storage client for the same endpoint as a pyarrow ``GcsFileSystem`` (anonymous where that
    one is, else Google's default credential chain)."""
    endpoint = options.get("endpoint_override") or None
    if endpoint and "://" not in endpoint:
        endpoint = f"{options.get('scheme') or 'https'}://{endpoint}"
    key = ("gcs", endpoint, bool(options.get("anonymous")), options.get("project_id"))
    if key not in _CLIENTS:
        from google.cloud import storage as gcs

        kwargs: dict = {"project": options.get("project_id") or None}
        if endpoint:
            kwargs["client_options"] = {"api_endpoint": endpoint}
        if options.get("anonymous"):
            from google.auth.credentials import AnonymousCredentials

            kwargs.update(credentials=AnonymousCredentials(), project=kwargs["project"] or "<none>")
        _CLIENTS[key] = gcs.Client(**kwargs)
    return _CLIENTS[key]


def _azure_create_exclusive(options: dict, path: str, data: bytes) -> bool:
    try:
        from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError
    except ImportError as e:
        raise ConfigError("the one-writer lock on Azure Blob is a conditional PUT (If-None-Match: *), sent through "
                          "azure-storage-blob: pip install 'docscore[azure]'") from e
    container, _, blob = path.partition("/")
    try:
        _azure_client(options).get_blob_client(container, blob).upload_blob(data, overwrite=False, timeout=30)
    except ResourceExistsError:
        return False
    except HttpResponseError as e:
        if e.status_code in (409, 412):
            return False
        raise OSError(f"cannot create {path} on Azure Blob: {e.error_code or e.status_code or e.reason}") from e
    except AzureError as e:
        raise OSError(f"cannot create {path} on Azure Blob: {_one_line(e).split(' Content:')[0]}") from e
    return True


def _azure_client(options: dict):
    """An azure-storage-blob client for the same account, endpoint and credential as a pyarrow
    ``AzureFileSystem``."""
    account = options["account_name"]
    authority = options.get("blob_storage_authority") or ".blob.core.windows.net"
    scheme = options.get("blob_storage_scheme") or "https"
    # an authority starting with "." follows the account (real Azure); else it is a host of its own (Azurite)
    url = f"{scheme}://{account}{authority}" if authority.startswith(".") else f"{scheme}://{authority}/{account}"
    key = ("azure", url, options.get("account_key"), options.get("sas_token"), options.get("client_id"))
    if key not in _CLIENTS:
        from azure.storage.blob import BlobServiceClient

        if options.get("account_key"):
            credential = {"account_name": account, "account_key": options["account_key"]}
        elif options.get("sas_token"):
            credential = options["sas_token"]
        else:
            try:
                import azure.identity as identity
            except ImportError as e:
                raise ConfigError("without AZURE_STORAGE_CONNECTION_STRING, the lock on Azure Blob authenticates "
                                  "through azure-identity: pip install 'docscore[azure]'") from e
            if options.get("client_secret"):
                credential = identity.ClientSecretCredential(options["tenant_id"], options["client_id"],
                                                             options["client_secret"])
            else:
                credential = identity.DefaultAzureCredential()
        _CLIENTS[key] = BlobServiceClient(url, credential=credential)
    return _CLIENTS[key]


# --- versioned objects: the writer lock's heartbeat and release replace or delete it only if it is still theirs ---


def read_versioned(fs: pafs.FileSystem, path: str) -> tuple[bytes, str | None] | None:
    """An object's bytes and their version, read together (the ETag on S3 and Azure Blob, the generation on GCS;
    None on a local disk), for :func:`replace_if_match` and :func:`delete_if_match`; None when it does not exist."""
    if isinstance(fs, pafs.GcsFileSystem):
        from google.api_core.exceptions import GoogleAPIError, NotFound, PreconditionFailed

        bucket, _, key = path.partition("/")
        try:
            for _ in range(3):  # the object replaced between its metadata and its bytes: read it again
                blob = _gcs_client(_options(fs)).bucket(bucket).get_blob(key, timeout=30)
                if blob is None:
                    return None
                try:
                    return blob.download_as_bytes(if_generation_match=blob.generation, timeout=30), str(blob.generation)
                except (NotFound, PreconditionFailed):
                    continue
        except GoogleAPIError as e:
            raise OSError(f"cannot read gs://{path}: {_one_line(e)}") from e
        raise OSError(f"cannot read gs://{path}: it keeps changing")
    if isinstance(fs, pafs.AzureFileSystem):
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        container, _, blob = path.partition("/")
        try:
            got = _azure_client(_options(fs)).get_blob_client(container, blob).download_blob(timeout=30)
            return got.readall(), got.properties.etag
        except ResourceNotFoundError:
            return None
        except AzureError as e:
            raise OSError(f"cannot read {path} on Azure Blob: {_one_line(e).split(' Content:')[0]}") from e
    options = s3_options(fs)
    if options is None:
        data = read_bytes(fs, path)
        return None if data is None else (data, None)
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = path.partition("/")
    try:
        got = _s3_client(options).get_object(Bucket=bucket, Key=key)
        return got["Body"].read(), got["ETag"]
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise OSError(f"cannot read s3://{path}: {e.response.get('Error', {}).get('Code') or _one_line(e)}") from e
    except BotoCoreError as e:
        raise OSError(f"cannot read s3://{path}: {_one_line(e)}") from e


def replace_if_match(fs: pafs.FileSystem, path: str, data: bytes, version: str | None) -> bool:
    """Replace an object whole only if it is still at ``version`` (from :func:`read_versioned`); False when it
    changed or vanished meanwhile. S3: a PUT with ``If-Match`` (a store without it gets a plain PUT), GCS
    ``ifGenerationMatch``, Azure Blob ``If-Match``. A local disk has no such write: the lock keeps its own file open
    instead (:class:`~docscore.batch.commit.lock.WriterLock`)."""
    return _if_match(fs, path, version, data)


def delete_if_match(fs: pafs.FileSystem, path: str, version: str | None) -> bool:
    """Delete an object only if it is still at ``version``; False when it changed or vanished meanwhile (S3 a
    DELETE with ``If-Match``, plain where the store lacks it; GCS ``ifGenerationMatch``; Azure Blob ``If-Match``)."""
    return _if_match(fs, path, version, None)


def _if_match(fs: pafs.FileSystem, path: str, version: str | None, data: bytes | None) -> bool:
    what = "replace" if data is not None else "delete"
    if isinstance(fs, pafs.GcsFileSystem):
        from google.api_core.exceptions import GoogleAPIError, NotFound, PreconditionFailed

        bucket, _, key = path.partition("/")
        blob = _gcs_client(_options(fs)).bucket(bucket).blob(key)
        try:
            if data is None:
                blob.delete(if_generation_match=int(version), timeout=30)
            else:
                blob.upload_from_string(data, if_generation_match=int(version), timeout=30)
        except (PreconditionFailed, NotFound):
            return False
        except GoogleAPIError as e:
            raise OSError(f"cannot {what} gs://{path}: {_one_line(e)}") from e
        return True
    if isinstance(fs, pafs.AzureFileSystem):
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

        container, _, name = path.partition("/")
        blob = _azure_client(_options(fs)).get_blob_client(container, name)
        condition = {"etag": version, "match_condition": MatchConditions.IfNotModified}
        try:
            if data is None:
                blob.delete_blob(timeout=30, **condition)
            else:
                blob.upload_blob(data, overwrite=True, timeout=30, **condition)
        except ResourceNotFoundError:
            return False
        except HttpResponseError as e:
            if e.status_code in (404, 409, 412):
                return False
            raise OSError(f"cannot {what} {path} on Azure Blob: {e.error_code or e.status_code or e.reason}") from e
        except AzureError as e:
            raise OSError(f"cannot {what} {path} on Azure Blob: {_one_line(e).split(' Content:')[0]}") from e
        return True
    options = s3_options(fs)
    if options is None:
        raise ConfigError(f"{type(fs).__name__}: no conditional {what}; docscore implements it for S3, GCS and "
                          "Azure Blob only")
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = path.partition("/")
    client = _s3_client(options)
    call = (lambda **c: client.delete_object(Bucket=bucket, Key=key, **c)) if data is None else (
        lambda **c: client.put_object(Bucket=bucket, Key=key, Body=data, **c))
    try:
        try:
            call(IfMatch=version)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("NotImplemented", "501"):
                raise
            call()  # an S3-compatible store without If-Match: a plain one (the caller checked just before)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409", "404"):
            return False
        raise OSError(f"cannot {what} s3://{path}: {code or _one_line(e)}") from e
    except BotoCoreError as e:
        raise OSError(f"cannot {what} s3://{path}: {_one_line(e)}") from e
    return True


def etag(fs: pafs.FileSystem, path: str) -> str | None:
    """An object's ETag on S3 (it changes with every write of the object; None on other stores or without
    boto3). ``pyarrow.fs`` reports size and modification time but not the ETag."""
    options = s3_options(fs)
    if options is None:
        return None
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return None
    bucket, _, key = path.partition("/")
    try:
        return _s3_client(options).head_object(Bucket=bucket, Key=key).get("ETag")
    except (BotoCoreError, ClientError):
        return None


_CLIENTS: dict = {}


def _s3_client(options: dict):
    """A boto3 S3 client for the same endpoint and region as a pyarrow ``S3FileSystem`` (credentials from boto3's
    standard chain, which reads the same variables and files as the AWS SDK under pyarrow)."""
    endpoint = options.get("endpoint_override") or None
    if endpoint and "://" not in endpoint:
        endpoint = f"{options.get('scheme') or 'https'}://{endpoint}"
    key = (endpoint, options.get("region"))
    if key not in _CLIENTS:
        import boto3

        _CLIENTS[key] = boto3.session.Session().client("s3", endpoint_url=endpoint,
                                                       region_name=options.get("region") or None)
    return _CLIENTS[key]
