"""`pylium apply`, `pylium get`, `pylium delete`: kubectl's verbs over the cluster store."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pylium.cli.output import fail, list_document, render_table, to_json, to_yaml

if TYPE_CHECKING:
    from pylium.api import KindInfo
    from pylium.store import Store

T = TypeVar("T")

OUTPUT_FORMATS = ("wide", "json", "yaml", "name")

store_option = click.option(
    "--store",
    "store_url",
    envvar="PYLIUM_STORE",
    metavar="URL",
    help="Store URL (sqlite:///abs/path.db); default: the lab's (or set PYLIUM_STORE).",
)


def _run(ctx: click.Context, store_url: str | None, work: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store the command acts on, run `work(store)`, close it; errors exit 1."""
    from pylium.cli.store_url import NoStore, resolve_store_url
    from pylium.store import StoreError, open_store

    try:
        url = resolve_store_url(store_url, (ctx.obj or {}).get("lab", "lab"))
        store = open_store(url)
    except (NoStore, StoreError) as exc:
        fail(str(exc))

    async def main() -> T:
        try:
            return await work(store)
        except StoreError as exc:
            fail(str(exc))
        finally:
            await store.close()

    return asyncio.run(main())


def _resource_name(info: KindInfo) -> str:
    """`pod`, or `networkpolicy.networking.k8s.io` for kinds outside the core group (kubectl)."""
    group = info.api_version.rpartition("/")[0]
    return f"{info.kind.lower()}.{group}" if group else info.kind.lower()


@click.command("apply")
@click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    required=True,
    help="A manifest file, a directory of them, or - for stdin (YAML or JSON).",
)
@store_option
@click.pass_context
def apply_cmd(ctx: click.Context, files: tuple[str, ...], store_url: str | None) -> None:
    """Create or update objects from manifests. All are validated and admitted (a Service gets
    its ClusterIP and NodePorts) first; if any is invalid, nothing is stored."""
    from pylium.api import ApiError, kind_for, validate
    from pylium.cli.manifests import ManifestError, load_manifests
    from pylium.loadbalancer.serviceipam import admit

    try:
        manifests = load_manifests(files)
    except ManifestError as exc:
        fail(str(exc))
    valid: list[tuple[dict[str, Any], str]] = []  # (object, source)
    errors: list[str] = []
    for manifest in manifests:
        try:
            valid.append((validate(manifest.object), manifest.source))
        except ApiError as exc:
            errors.append(f"{exc} (in {manifest.source})")
    _fail_with(errors)
    if not valid:
        fail("no objects passed to apply")

    async def work(store: Store) -> None:
        # Allocations of objects admitted before a later one fails are recorded but never
        # stored: the operator's service IPAM repair frees them.
        admitted = []
        for obj, source in valid:
            try:
                admitted.append(await admit(store, obj))
            except ApiError as exc:
                errors.append(f"{exc} (in {source})")
        _fail_with(errors)
        for obj in admitted:
            stored, result = await store.apply(obj)
            info = kind_for(obj["apiVersion"], obj["kind"])
            click.echo(f"{_resource_name(info)}/{stored['metadata']['name']} {result}")

    _run(ctx, store_url, work)


def _fail_with(errors: list[str]) -> None:
    """Print every error and exit 1; nothing when there is none."""
    if errors:
        for message in errors[:-1]:
            click.echo(f"error: {message}", err=True)
        fail(errors[-1])


@click.command("get")
@click.argument("resource")
@click.argument("names", nargs=-1)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-A", "--all-namespaces", is_flag=True, help="List across every namespace.")
@click.option("-o", "--output", type=click.Choice(OUTPUT_FORMATS), help="Output format.")
@store_option
@click.pass_context
def get_cmd(
    ctx: click.Context,
    resource: str,
    names: tuple[str, ...],
    namespace: str,
    all_namespaces: bool,
    output: str | None,
    store_url: str | None,
) -> None:
    """Show objects: RESOURCE is e.g. pods (po), services (svc), namespaces (ns), nodes (no),
    networkpolicies (netpol), ciliumnodes (cn), policies (every policy kind); NAMES picks
    objects."""
    from pylium.api import UnknownKind, resolve_resource
    from pylium.cli.printers import columns_for, service_backend_columns
    from pylium.store import NotFound

    if resource in ("policies", "policy") and not names:  # every policy kind, with selections
        from pylium.cli.policy import get_policies

        get_policies(ctx, None if all_namespaces else namespace, output, store_url)
        return
    try:
        info = resolve_resource(resource)
    except UnknownKind as exc:
        fail(str(exc))
    if names and all_namespaces:
        fail("a resource cannot be retrieved by name across all namespaces")
    ns: str | None = namespace if info.namespaced and not all_namespaces else None
    name_ns = namespace if info.namespaced else ""

    slices: list[dict[str, Any]] = []
    show_backends = info.kind == "Service" and output == "wide"

    async def work(store: Store) -> list[dict[str, Any]]:
        if show_backends:
            slices.extend((await store.list("EndpointSlice", ns))[0])
        if not names:
            objects, _ = await store.list(info.kind, ns)
            return list(objects)
        found = []
        for name in names:
            try:
                found.append(await store.get(info.kind, name_ns, name))
            except NotFound:
                fail(f'{info.plural} "{name}" not found')
        return found

    objects = _run(ctx, store_url, work)
    if output in ("json", "yaml"):
        doc = objects[0] if len(names) == 1 else list_document(objects)
        click.echo(to_json(doc) if output == "json" else to_yaml(doc))
        return
    if output == "name":
        for obj in objects:
            click.echo(f"{_resource_name(info)}/{obj['metadata']['name']}")
        return
    if not objects:
        where = f" in {namespace} namespace" if ns else ""
        click.echo(f"No resources found{where}.", err=True)
        return
    columns = columns_for(info.kind, wide=output == "wide")
    if show_backends:
        columns += service_backend_columns(slices)
    headers = [c.header for c in columns]
    rows = [[c.cell(o) for c in columns] for o in objects]
    if info.namespaced and all_namespaces:
        headers = ["NAMESPACE", *headers]
        rows = [
            [o["metadata"].get("namespace", ""), *r] for o, r in zip(objects, rows, strict=True)
        ]
    click.echo(render_table(headers, rows))


@click.command("delete")
@click.argument("resource", required=False)
@click.argument("names", nargs=-1)
@click.option("-f", "--filename", "files", multiple=True, help="Delete the objects in manifests.")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--ignore-not-found", is_flag=True, help="Treat absent objects as deleted.")
@store_option
@click.pass_context
def delete_cmd(
    ctx: click.Context,
    resource: str | None,
    names: tuple[str, ...],
    files: tuple[str, ...],
    namespace: str,
    ignore_not_found: bool,
    store_url: str | None,
) -> None:
    """Delete objects: `delete -f FILE` or `delete RESOURCE NAME... [-n NS]`."""
    from pylium.api import ApiError, resolve_resource
    from pylium.cli.manifests import ManifestError, load_manifests
    from pylium.loadbalancer.serviceipam import forget
    from pylium.store import NotFound

    targets: list[tuple[KindInfo, str, str]] = []  # (kind, namespace, name)
    try:
        if files:
            if resource:
                fail("use either -f FILE or RESOURCE NAME, not both")
            targets = [_target_of(m.object) for m in load_manifests(files)]
        else:
            if not resource or not names:
                fail("give -f FILE, or a RESOURCE and one or more NAMEs")
            info = resolve_resource(resource)
            targets = [(info, namespace if info.namespaced else "", n) for n in names]
    except (ManifestError, ApiError) as exc:
        fail(str(exc))

    async def work(store: Store) -> int:
        missing = 0
        for info, ns, name in targets:
            try:
                await store.delete(info.kind, ns, name)
            except NotFound:
                if not ignore_not_found:
                    missing += 1
                    click.echo(f'error: {info.plural} "{name}" not found', err=True)
                continue
            await forget(store, info.kind, ns, name)  # frees a Service's addresses and ports
            click.echo(f'{info.kind.lower()} "{name}" deleted')
        return missing

    if _run(ctx, store_url, work):
        raise click.exceptions.Exit(1)


def _target_of(obj: Any) -> tuple[KindInfo, str, str]:
    """(kind, namespace, name) of a manifest object; only what a delete needs is checked, so
    an object stored before a schema change can still be deleted by its file."""
    from pylium.api import DEFAULT_NAMESPACE, FieldError, InvalidObject, kind_for

    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or not isinstance(name, str) or not name:
        kind = obj.get("kind", "Object") if isinstance(obj, dict) else "Object"
        raise InvalidObject(str(kind), "", [FieldError("metadata.name", "Required value")])
    info = kind_for(str(obj.get("apiVersion")), str(obj.get("kind")))
    namespace = (meta.get("namespace") or DEFAULT_NAMESPACE) if info.namespaced else ""
    return info, namespace, name
