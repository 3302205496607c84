"""A thin, thread-safe, raw-JSON REST client for the Kubernetes API.

The ``kubernetes`` package is used only for what it does well: reading a
kubeconfig (or the in-cluster service account) into a ``Configuration`` and
building the TLS-configured urllib3 pool of its ``ApiClient``. Requests go
straight through that pool and bodies are parsed with ``json.loads``: every
object is a plain ``dict``. Deserializing into the generated model classes
costs several times the CPU and memory of the JSON itself, and an informer
cache of tens of thousands of pods cannot afford it.

One client is shared by every thread of a process: urllib3's pool is
thread-safe, the discovery cache and the rate limiter take a lock.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any
from typing import Literal

import urllib3

from ovnk.core.kube.errors import Conflict
from ovnk.core.kube.errors import KubeError
from ovnk.core.kube.errors import NotFound
from ovnk.core.kube.errors import ResourceExpired
from ovnk.core.kube.errors import Unavailable
from ovnk.core.kube.errors import error_from_status
from ovnk.core.kube.resources import CRDS
from ovnk.core.kube.resources import Resource

if TYPE_CHECKING:
    from kubernetes.client import Configuration

    from ovnk.core.config import KubernetesSettings

logger = logging.getLogger(__name__)

PatchType = Literal["merge", "strategic", "json"]
# Module-level aliases: inside KubeClient, ``list`` names the method.
JsonObject = dict[str, Any]
JsonObjects = list[dict[str, Any]]
WATCH_EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK"})

_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}
_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event of a watch stream: ``type`` is ADDED, MODIFIED, DELETED or BOOKMARK."""

    type: str
    object: dict[str, Any]


class TokenBucket:
    """Client-side rate limit: ``rate`` requests per second with bursts of ``burst``.

    Callers reserve a token under the lock and sleep outside it, so waiting
    threads are served in arrival order and never hold each other up longer
    than the rate requires.
    """

    def __init__(self, *, rate: float, burst: int) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self._rate = rate
        self._burst = float(max(1, burst))
        self._tokens = self._burst
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until it is available; returns the seconds waited."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            self._tokens -= 1.0
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)
        return wait


def _load_configuration(kubeconfig: str | None) -> Configuration:
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    configuration = k8s_client.Configuration()
    try:
        if kubeconfig:
            k8s_config.load_kube_config(
                config_file=kubeconfig, client_configuration=configuration, persist_config=False
            )  # type: ignore[no-untyped-call]
        else:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except (k8s_config.ConfigException, OSError, ValueError) as exc:
        where = f"kubeconfig {kubeconfig}" if kubeconfig else "in-cluster service account"
        raise KubeError(f"cannot load Kubernetes client configuration from {where}: {exc}") from exc
    return configuration


def _decode_error(status: int, data: bytes, *, context: str) -> KubeError:
    body: Mapping[str, Any] | None = None
    try:
        parsed = json.loads(data) if data else None
        if isinstance(parsed, dict):
            body = parsed
    except ValueError:
        pass
    if body is None and data:
        body = {"message": data.decode(errors="replace").strip()[:500]}
    return error_from_status(status, body, context=context)


class WatchStream(Iterator[WatchEvent]):
    """The events of one watch request, parsed line by line as they arrive.

    Iteration ends when the server closes the watch (its timeout) or after
    :meth:`close`, which any thread may call: it shuts the socket down so a
    reader blocked in ``recv`` returns at once, and the connection is dropped
    rather than returned to the pool half-read. An ``ERROR`` event raises
    (``ResourceExpired`` for 410); a broken connection raises ``Unavailable``.
    """

    def __init__(self, response: urllib3.BaseHTTPResponse, *, context: str) -> None:
        self._response = response
        self._context = context
        self._chunks = response.stream(1 << 16)
        self._lines: deque[bytes] = deque()
        self._partial = b""
        self._closed = False
        self._lock = threading.Lock()

    def __iter__(self) -> WatchStream:
        return self

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __next__(self) -> WatchEvent:
        while True:
            if not self._lines:
                self._fill()
            line = self._lines.popleft()
            try:
                raw = json.loads(line)
                event_type = str(raw["type"])
                obj = raw["object"]
            except (ValueError, KeyError, TypeError) as exc:
                self.close()
                raise KubeError(f"{self._context}: undecodable watch event {line[:200]!r}: {exc}") from exc
            if event_type in WATCH_EVENT_TYPES:
                return WatchEvent(event_type, obj)
            if event_type == "ERROR":
                self.close()
                status = obj if isinstance(obj, dict) else {}
                raise error_from_status(int(status.get("code") or 500), status, context=self._context)
            logger.warning("%s: skipping watch event of unknown type %r", self._context, event_type)

    def _fill(self) -> None:
        """Read chunks until at least one complete line is buffered; StopIteration at the end."""
        while not self._lines:
            if self._closed:
                raise StopIteration
            try:
                chunk = next(self._chunks)
            except StopIteration:
                tail = self._partial.strip()
                self._partial = b""
                self.close()
                if tail:
                    self._lines.append(tail)
                    return
                raise
            except Exception as exc:
                if self._closed:
                    raise StopIteration from None
                self.close()
                raise Unavailable(f"{self._context}: watch connection broken: {exc}") from exc
            if not chunk:
                continue
            parts = (self._partial + chunk).split(b"\n")
            self._partial = parts.pop()
            self._lines.extend(part for part in parts if part.strip())

    def __del__(self) -> None:
        # A caller that stops iterating without close() must not leak the connection.
        try:
            self.close()
        except Exception:
            pass

    def close(self) -> None:
        """End the stream and drop its connection (idempotent, callable from any thread)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        response = self._response
        for step in (response.shutdown, response.close, response.release_conn):
            try:
                step()
            except Exception:  # already closed or released: nothing left to free
                pass


class KubeClient:
    """Raw-JSON facade over the Kubernetes REST API; every object is a plain ``dict``.

    :param kubeconfig: kubeconfig path; ``None`` or ``""`` means the in-cluster service account.
    :param request_timeout: seconds to connect and to wait for each response.
    :param qps: client-side rate limit (requests per second, bursts of one second's worth).
    :param user_agent: the ``User-Agent`` header (shows up in audit logs).
    :param pool_size: kept-alive connections; each running watch holds one.
    """

    def __init__(
        self,
        *,
        kubeconfig: str | None = None,
        request_timeout: float = 30.0,
        qps: float = 200.0,
        user_agent: str = "ovnk",
        pool_size: int = 32,
    ) -> None:
        from kubernetes.client import ApiClient

        configuration = _load_configuration(kubeconfig)
        configuration.connection_pool_maxsize = pool_size
        self._configuration = configuration
        self._api_client = ApiClient(configuration)
        self._pool: urllib3.PoolManager = self._api_client.rest_client.pool_manager
        self.host = str(configuration.host).rstrip("/")
        self.request_timeout = request_timeout
        self._timeout = urllib3.Timeout(connect=request_timeout, read=request_timeout)
        self._user_agent = user_agent
        self._limiter = TokenBucket(rate=qps, burst=max(1, round(qps)))
        self._lock = threading.Lock()
        self._resolved: dict[Resource, Resource] = {}
        self._served: dict[tuple[str, str], frozenset[str]] = {}

    @classmethod
    def from_settings(cls, settings: KubernetesSettings) -> KubeClient:
        """A client configured by the ``[kubernetes]`` settings."""
        return cls(
            kubeconfig=settings.kubeconfig or None,
            request_timeout=settings.request_timeout,
            qps=settings.qps,
        )

    def close(self) -> None:
        """Close the idle pooled connections (a running watch is ended by its own ``close()``)."""
        self._pool.clear()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- discovery -------------------------------------------------------------

    def resolve(self, resource: Resource) -> Resource:
        """The first of ``(version, *fallback_versions)`` the server serves, as a Resource.

        Positive answers are cached for the client's lifetime; negative ones are
        not (a CRD may be installed later). Raises ``KubeError`` (reason
        ``NotServed``) when no version is served.
        """
        with self._lock:
            cached = self._resolved.get(resource)
        if cached is not None:
            return cached
        versions = (resource.version, *resource.fallback_versions)
        for version in versions:
            if resource.plural in self._served_resources(resource.group, version):
                resolved = resource.with_version(version)
                with self._lock:
                    self._resolved[resource] = resolved
                if version != resource.version:
                    logger.info("%s: %s not served, using %s", resource.label, resource.version, version)
                return resolved
        group = resource.group or "core"
        raise KubeError(
            f"{resource.label}: the API server at {self.host} serves none of the versions "
            f"{', '.join(versions)} of group {group}",
            status=404, reason="NotServed",
        )

    def serves(self, group: str, version: str, plural: str) -> bool:
        """Whether the server serves ``plural`` in ``group/version`` now (discovery, never from the cache:
        the answer changes when a CRD is installed). Discovery needs no RBAC rule."""
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            document = self._request("GET", path)
        except NotFound:
            return False
        return any(entry.get("name") == plural for entry in document.get("resources") or ())

    def _served_resources(self, group: str, version: str) -> frozenset[str]:
        with self._lock:
            cached = self._served.get((group, version))
        if cached is not None:
            return cached
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            document = self._request("GET", path)
        except NotFound:
            return frozenset()
        names = frozenset(str(entry.get("name")) for entry in document.get("resources") or ())
        if names:
            with self._lock:
                self._served[(group, version)] = names
        return names

    def _version_of(self, resource: Resource) -> Resource:
        # Only resources with fallbacks need discovery; the rest are used as written.
        return self.resolve(resource) if resource.fallback_versions else resource

    # -- paths -----------------------------------------------------------------

    def _collection_path(self, resource: Resource, namespace: str | None) -> str:
        prefix = f"/apis/{resource.group}/{resource.version}" if resource.group else f"/api/{resource.version}"
        if namespace:
            if not resource.namespaced:
                raise ValueError(f"{resource.label} is cluster-scoped; no namespace may be given")
            return f"{prefix}/namespaces/{urllib.parse.quote(namespace, safe='')}/{resource.plural}"
        return f"{prefix}/{resource.plural}"

    def _object_path(self, resource: Resource, name: str, namespace: str | None) -> str:
        if not name:
            raise ValueError(f"{resource.label}: an object name is required")
        if resource.namespaced and not namespace:
            raise ValueError(f"{resource.label} is namespaced; a namespace is required for {name!r}")
        return f"{self._collection_path(resource, namespace)}/{urllib.parse.quote(name, safe='')}"

    @staticmethod
    def _body_namespace(resource: Resource, body: Mapping[str, Any], namespace: str | None) -> str | None:
        if not resource.namespaced:
            return None
        return namespace or (body.get("metadata") or {}).get("namespace")

    # -- transport -------------------------------------------------------------

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": self._user_agent}
        # Calls the configuration's refresh hook, so rotated service-account tokens are picked up.
        token = self._configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
        if token:
            headers["Authorization"] = token
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _send(
        self,
        method: str,
        url: str,
        *,
        context: str,
        timeout: urllib3.Timeout,
        preload: bool,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """One rate-limited request; transport failures become ``Unavailable``.

        urllib3's own retries are off (they log a warning per attempt while the API
        server is down; callers back off instead). The one retry made here is for a
        GET that failed on a broken connection (typically a kept-alive one the
        server had closed): repeating a read is harmless. Other verbs are not
        retried, since they may have taken effect.
        """
        for attempt in (1, 2):
            self._limiter.acquire()
            try:
                return self._pool.request(
                    method, url, body=body, headers=self._headers(content_type), timeout=timeout,
                    retries=False, redirect=False, preload_content=preload,
                )
            except urllib3.exceptions.ProtocolError as exc:
                if method != "GET" or attempt == 2:
                    raise Unavailable(f"{context}: {exc}") from exc
            except _TRANSPORT_ERRORS as exc:
                raise Unavailable(f"{context}: {exc}") from exc
        raise AssertionError("unreachable")

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        url = self.host + path
        params = {k: v for k, v in (query or {}).items() if v is not None and v != ""}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        response = self._send(method, url, context=f"{method} {path}", body=data,
                              content_type=content_type if data is not None else None,
                              timeout=self._timeout, preload=True)
        if response.status >= 400:
            raise _decode_error(response.status, response.data, context=f"{method} {path}")
        if not response.data:
            return {}
        result = json.loads(response.data)
        return result if isinstance(result, dict) else {"value": result}

    # -- verbs -----------------------------------------------------------------

    def get(self, resource: Resource, name: str, *, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or ``None`` if it does not exist."""
        served = self._version_of(resource)
        try:
            return self._request("GET", self._object_path(served, name, namespace))
        except NotFound:
            return None

    def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 500,
        transform: Callable[[JsonObject], JsonObject] | None = None,
    ) -> tuple[JsonObjects, str]:
        """Every matching object (following ``continue`` pages) and the list's resourceVersion.

        Items get ``apiVersion`` and ``kind`` filled in (the server omits them in lists).
        ``limit <= 0`` asks for everything in one response. If a continue token
        expires midway, the list starts over unpaginated, as client-go's pager does.
        ``transform`` is applied to each item as its page arrives, so only the transformed
        objects are kept (an informer's stripped pods: 10,000 full pods held until the last page
        made a controller's start-up peak, and its RSS, far larger than its cache).
        """
        served = self._version_of(resource)
        api_version, kind = served.api_version, served.kind
        path = self._collection_path(served, namespace)
        items: JsonObjects = []
        page_limit: int | None = limit if limit > 0 else None
        token: str | None = None
        while True:
            query = {"labelSelector": label_selector, "fieldSelector": field_selector,
                     "limit": page_limit, "continue": token}
            try:
                page = self._request("GET", path, query=query)
            except ResourceExpired:
                if token is None:
                    raise
                logger.info("GET %s: continue token expired after %d items; listing again", path, len(items))
                items, token, page_limit = [], None, None
                continue
            for item in page.get("items") or ():
                item["apiVersion"] = api_version
                item["kind"] = kind
                items.append(transform(item) if transform is not None else item)
            metadata = page.get("metadata") or {}
            token = metadata.get("continue") or None
            del page
            if token is None:
                resource_version = str(metadata.get("resourceVersion") or "")
                break
        return items, resource_version

    def watch(
        self,
        resource: Resource,
        *,
        resource_version: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
        allow_bookmarks: bool = True,
    ) -> WatchStream:
        """Watch changes after ``resource_version``; a closable iterator of :class:`WatchEvent`.

        An HTTP 410 raises ``ResourceExpired`` here; a 410 ``ERROR`` event raises it
        while iterating. The server ends the watch after ``timeout_seconds``.
        """
        served = self._version_of(resource)
        path = self._collection_path(served, namespace)
        query = {
            "watch": "true", "resourceVersion": resource_version, "timeoutSeconds": timeout_seconds,
            "allowWatchBookmarks": "true" if allow_bookmarks else None,
            "labelSelector": label_selector, "fieldSelector": field_selector,
        }
        url = f"{self.host}{path}?{urllib.parse.urlencode({k: v for k, v in query.items() if v})}"
        context = f"WATCH {path}"
        response = self._send(
            "GET", url, context=context, preload=False,
            timeout=urllib3.Timeout(connect=self.request_timeout, read=timeout_seconds + self.request_timeout),
        )
        if response.status >= 400:
            try:
                data = response.read()
            except _TRANSPORT_ERRORS:
                data = b""
            response.release_conn()
            raise _decode_error(response.status, data, context=context)
        return WatchStream(response, context=context)

    def create(self, resource: Resource, body: Mapping[str, Any], *, namespace: str | None = None) -> dict[str, Any]:
        """POST ``body``; the namespace defaults to ``body.metadata.namespace``. ``Conflict`` if it exists."""
        served = self._version_of(resource)
        ns = self._body_namespace(served, body, namespace)
        if served.namespaced and not ns:
            raise ValueError(f"{served.label} is namespaced; a namespace is required")
        return self._request("POST", self._collection_path(served, ns), body=body)

    def replace(self, resource: Resource, body: Mapping[str, Any], *, namespace: str | None = None) -> dict[str, Any]:
        """PUT ``body``; its ``metadata.resourceVersion`` makes a stale write fail with ``Conflict``."""
        served = self._version_of(resource)
        name = str((body.get("metadata") or {}).get("name") or "")
        path = self._object_path(served, name, self._body_namespace(served, body, namespace))
        return self._request("PUT", path, body=body)

    def patch(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        namespace: str | None = None,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """PATCH with a merge, strategic-merge or JSON (list of operations) patch."""
        served = self._version_of(resource)
        try:
            content_type = _PATCH_CONTENT_TYPES[patch_type]
        except KeyError:
            raise ValueError(f"unknown patch type {patch_type!r}; use one of {sorted(_PATCH_CONTENT_TYPES)}")
        path = self._object_path(served, name, namespace)
        if subresource:
            path += f"/{subresource}"
        return self._request("PATCH", path, body=patch, content_type=content_type)

    def delete(self, resource: Resource, name: str, *, namespace: str | None = None,
               grace_period_seconds: int | None = None) -> bool:
        """DELETE; ``False`` if the object was already gone. ``grace_period_seconds=0`` deletes at once."""
        served = self._version_of(resource)
        query = {"gracePeriodSeconds": grace_period_seconds} if grace_period_seconds is not None else None
        try:
            self._request("DELETE", self._object_path(served, name, namespace), query=query)
        except NotFound:
            return False
        return True

    def apply_crd(self, document: Mapping[str, Any], *, timeout: float = 30.0) -> None:
        """Create or update a CustomResourceDefinition and wait until it is Established."""
        name = str(document["metadata"]["name"])
        deadline = time.monotonic() + timeout
        while True:
            existing = self.get(CRDS, name)
            try:
                if existing is None:
                    self.create(CRDS, document)
                else:
                    body = copy.deepcopy(dict(document))
                    body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
                    self.replace(CRDS, body)
                break
            except Conflict:
                # Someone else created or changed it between our read and write: read again.
                if time.monotonic() > deadline:
                    raise
        conditions: JsonObjects = []
        while True:
            current = self.get(CRDS, name) or {}
            conditions = (current.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                logger.info("CRD %s is established", name)
                return
            if time.monotonic() > deadline:
                raise KubeError(f"CRD {name} not Established after {timeout:.0f}s; conditions: {conditions}",
                                reason="Timeout")
            time.sleep(0.05)
