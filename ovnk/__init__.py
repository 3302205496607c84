"""ovnk: OVN-Kubernetes rebuilt in Python as a plugin framework.

This module is the public API for plugin authors: everything a plugin needs is
importable from ``ovnk`` (and the two helper namespaces :mod:`ovnk.names` and
:mod:`ovnk.annotations`); every other module, ``ovnk.core.*`` included, is
private and may change without notice. ``docs/hooks.md`` describes each name;
a contract test keeps that page, this list and the code in step.

The module is deliberately lazy: the CNI shim imports ``ovnk.cni.shim`` on
every pod start, and importing this package must not pull in pluggy,
kubernetes or ovsdbapp. Names are resolved on first attribute access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    # -- hooks, plugins, configuration --------------------------------------------
    "hookimpl": ("ovnk.core.hookspecs", "hookimpl"),
    "hookspec": ("ovnk.core.hookspecs", "hookspec"),
    "PluginManager": ("ovnk.core.plugins", "OvnkPluginManager"),
    "setting": ("ovnk.core.settings", "setting"),
    "SettingsRegistry": ("ovnk.core.settings", "SettingsRegistry"),
    "Config": ("ovnk.core.config", "Config"),
    "Claims": ("ovnk.core.claims", "Claims"),
    "command_settings": ("ovnk.core.cli", "command_settings"),
    "command_config": ("ovnk.core.cli", "command_config"),
    # -- errors -------------------------------------------------------------------
    "OvnkError": ("ovnk.core.errors", "OvnkError"),
    "ConfigError": ("ovnk.core.errors", "ConfigError"),
    "PluginError": ("ovnk.core.errors", "PluginError"),
    "StartupError": ("ovnk.core.errors", "StartupError"),
    "TemporaryError": ("ovnk.core.errors", "TemporaryError"),
    "PermanentError": ("ovnk.core.errors", "PermanentError"),
    "OwnershipError": ("ovnk.core.node.owners", "OwnershipError"),
    # -- Kubernetes -----------------------------------------------------------------
    "Resource": ("ovnk.core.kube.resources", "Resource"),
    "object_key": ("ovnk.core.kube.resources", "object_key"),
    "split_key": ("ovnk.core.kube.resources", "split_key"),
    "PODS": ("ovnk.core.kube.resources", "PODS"),
    "NODES": ("ovnk.core.kube.resources", "NODES"),
    "NAMESPACES": ("ovnk.core.kube.resources", "NAMESPACES"),
    "SERVICES": ("ovnk.core.kube.resources", "SERVICES"),
    "ENDPOINTSLICES": ("ovnk.core.kube.resources", "ENDPOINTSLICES"),
    "NETWORKPOLICIES": ("ovnk.core.kube.resources", "NETWORKPOLICIES"),
    "CONFIGMAPS": ("ovnk.core.kube.resources", "CONFIGMAPS"),
    "EVENTS": ("ovnk.core.kube.resources", "EVENTS"),
    "NETWORK_ATTACHMENT_DEFINITIONS": ("ovnk.core.kube.resources", "NETWORK_ATTACHMENT_DEFINITIONS"),
    "LabelSelector": ("ovnk.core.kube.selectors", "LabelSelector"),
    "parse_selector": ("ovnk.core.kube.selectors", "parse_selector"),
    "SelectorError": ("ovnk.core.kube.selectors", "SelectorError"),
    "KubeClient": ("ovnk.core.kube.client", "KubeClient"),
    "Store": ("ovnk.core.kube.cache", "Store"),
    "EventRecorder": ("ovnk.core.kube.events", "EventRecorder"),
    # -- the controller -------------------------------------------------------------
    "ControllerContext": ("ovnk.core.context", "ControllerContext"),
    "Controllers": ("ovnk.core.context", "Controllers"),
    "NbFacade": ("ovnk.core.context", "NbFacade"),
    "ControllerSpec": ("ovnk.core.reconcile.spec", "ControllerSpec"),
    "Watch": ("ovnk.core.reconcile.spec", "Watch"),
    "ReconcileRequest": ("ovnk.core.reconcile.spec", "ReconcileRequest"),
    "PeriodicTask": ("ovnk.core.reconcile.spec", "PeriodicTask"),
    "NbTxn": ("ovnk.core.ovn.txn", "NbTxn"),
    "Match": ("ovnk.core.ovn.commands", "Match"),
    "Ref": ("ovnk.core.ovn.commands", "Ref"),
    "Parent": ("ovnk.core.ovn.commands", "Parent"),
    "RepairPlan": ("ovnk.core.ovn.sync", "RepairPlan"),
    "RowSnapshot": ("ovnk.core.ovn.reader", "RowSnapshot"),
    "OwnerType": ("ovnk.core.ovn.ids", "OwnerType"),
    "DbObjectIds": ("ovnk.core.ovn.ids", "DbObjectIds"),
    "hashed_name": ("ovnk.core.ovn.ids", "hashed_name"),
    "DbView": ("ovnk.core.ovn.view", "DbView"),
    "open_db_view": ("ovnk.core.ovn.view", "open_db_view"),


    "parse_ids": ("ovnk.core.ovn.ids", "parse_ids"),
    # -- the default network's topology ---------------------------------------------
    "ClusterTopology": ("ovnk.core.topology.intents", "ClusterTopology"),
    "NodeTopology": ("ovnk.core.topology.intents", "NodeTopology"),
    "RowIntent": ("ovnk.core.topology.intents", "RowIntent"),
    "PodPort": ("ovnk.core.topology.intents", "PodPort"),
    "NodeFacts": ("ovnk.core.topology.state", "NodeFacts"),
    "TopologyState": ("ovnk.core.topology.state", "TopologyState"),
    "PodNetwork": ("ovnk.core.topology.annotations", "PodNetwork"),
    "GatewayConfig": ("ovnk.core.topology.annotations", "GatewayConfig"),
    # -- the node agent and the CNI server -------------------------------------------
    "NodeContext": ("ovnk.core.node.context", "NodeContext"),
    "NodeManager": ("ovnk.core.node.context", "NodeManager"),
    "CniFacade": ("ovnk.core.node.context", "CniFacade"),
    "OvsFacade": ("ovnk.core.node.ovs", "OvsFacade"),
    "FlowManager": ("ovnk.core.node.flows", "FlowManager"),
    "NetFacade": ("ovnk.core.node.net", "NetFacade"),
    "IpRule": ("ovnk.core.node.routing", "IpRule"),
    "TableRoute": ("ovnk.core.node.routing", "TableRoute"),
    "NftFacade": ("ovnk.core.node.nft", "NftFacade"),
    "NftTable": ("ovnk.core.node.nft", "NftTable"),
    "NftChain": ("ovnk.core.node.nft", "NftChain"),
    "NftRule": ("ovnk.core.node.nft", "NftRule"),
    "NftSet": ("ovnk.core.node.nft", "NftSet"),
    "NftMap": ("ovnk.core.node.nft", "NftMap"),
    "CniNetwork": ("ovnk.core.node.wiring", "CniNetwork"),
    "InterfaceDriver": ("ovnk.core.node.wiring", "InterfaceDriver"),
    "CniRequest": ("ovnk.cni.types", "CniRequest"),
    "CniResult": ("ovnk.cni.types", "CniResult"),
    "CniError": ("ovnk.cni.types", "CniError"),
}

__all__ = [
    "CONFIGMAPS",
    "ENDPOINTSLICES",
    "EVENTS",
    "NAMESPACES",
    "NETWORKPOLICIES",
    "NETWORK_ATTACHMENT_DEFINITIONS",
    "NODES",
    "PODS",
    "SERVICES",
    "Claims",
    "ClusterTopology",
    "CniError",
    "CniFacade",
    "CniNetwork",
    "CniRequest",
    "CniResult",
    "Config",
    "ConfigError",
    "ControllerContext",
    "ControllerSpec",
    "Controllers",
    "DbObjectIds",
    "DbView",
    "EventRecorder",
    "FlowManager",
    "GatewayConfig",
    "InterfaceDriver",
    "IpRule",
    "KubeClient",
    "LabelSelector",
    "Match",
    "NbFacade",
    "NbTxn",
    "NetFacade",
    "NftChain",
    "NftFacade",
    "NftMap",
    "NftRule",
    "NftSet",
    "NftTable",
    "NodeContext",
    "NodeFacts",
    "NodeManager",
    "NodeTopology",
    "OvnkError",
    "OvsFacade",
    "OwnerType",
    "OwnershipError",
    "Parent",
    "PeriodicTask",
    "PermanentError",
    "PluginError",
    "PluginManager",
    "PodNetwork",
    "PodPort",
    "ReconcileRequest",
    "Ref",
    "RepairPlan",
    "Resource",
    "RowIntent",
    "RowSnapshot",
    "SelectorError",
    "SettingsRegistry",
    "StartupError",
    "Store",
    "TableRoute",
    "TemporaryError",
    "TopologyState",
    "Watch",
    "__version__",
    "command_config",
    "command_settings",
    "hashed_name",
    "hookimpl",
    "hookspec",
    "object_key",
    "open_db_view",


    "parse_ids",
    "parse_selector",
    "setting",
    "split_key",
]

if TYPE_CHECKING:
    from ovnk.cni.types import CniError as CniError
    from ovnk.cni.types import CniRequest as CniRequest
    from ovnk.cni.types import CniResult as CniResult
    from ovnk.core.claims import Claims as Claims
    from ovnk.core.cli import command_config as command_config
    from ovnk.core.cli import command_settings as command_settings
    from ovnk.core.config import Config as Config
    from ovnk.core.context import ControllerContext as ControllerContext
    from ovnk.core.context import Controllers as Controllers
    from ovnk.core.context import NbFacade as NbFacade
    from ovnk.core.errors import ConfigError as ConfigError
    from ovnk.core.errors import OvnkError as OvnkError
    from ovnk.core.errors import PermanentError as PermanentError
    from ovnk.core.errors import PluginError as PluginError
    from ovnk.core.errors import StartupError as StartupError
    from ovnk.core.errors import TemporaryError as TemporaryError
    from ovnk.core.hookspecs import hookimpl as hookimpl
    from ovnk.core.hookspecs import hookspec as hookspec
    from ovnk.core.kube.cache import Store as Store
    from ovnk.core.kube.client import KubeClient as KubeClient
    from ovnk.core.kube.events import EventRecorder as EventRecorder
    from ovnk.core.kube.resources import CONFIGMAPS as CONFIGMAPS
    from ovnk.core.kube.resources import ENDPOINTSLICES as ENDPOINTSLICES
    from ovnk.core.kube.resources import EVENTS as EVENTS
    from ovnk.core.kube.resources import NAMESPACES as NAMESPACES
    from ovnk.core.kube.resources import (
        NETWORK_ATTACHMENT_DEFINITIONS as NETWORK_ATTACHMENT_DEFINITIONS,
    )
    from ovnk.core.kube.resources import NETWORKPOLICIES as NETWORKPOLICIES
    from ovnk.core.kube.resources import NODES as NODES
    from ovnk.core.kube.resources import PODS as PODS
    from ovnk.core.kube.resources import SERVICES as SERVICES
    from ovnk.core.kube.resources import Resource as Resource
    from ovnk.core.kube.resources import object_key as object_key
    from ovnk.core.kube.resources import split_key as split_key
    from ovnk.core.kube.selectors import LabelSelector as LabelSelector
    from ovnk.core.kube.selectors import SelectorError as SelectorError
    from ovnk.core.kube.selectors import parse_selector as parse_selector
    from ovnk.core.node.context import CniFacade as CniFacade
    from ovnk.core.node.context import NodeContext as NodeContext
    from ovnk.core.node.context import NodeManager as NodeManager
    from ovnk.core.node.flows import FlowManager as FlowManager
    from ovnk.core.node.net import NetFacade as NetFacade
    from ovnk.core.node.nft import NftChain as NftChain
    from ovnk.core.node.nft import NftFacade as NftFacade
    from ovnk.core.node.nft import NftMap as NftMap
    from ovnk.core.node.nft import NftRule as NftRule
    from ovnk.core.node.nft import NftSet as NftSet
    from ovnk.core.node.nft import NftTable as NftTable
    from ovnk.core.node.ovs import OvsFacade as OvsFacade
    from ovnk.core.node.owners import OwnershipError as OwnershipError
    from ovnk.core.node.routing import IpRule as IpRule
    from ovnk.core.node.routing import TableRoute as TableRoute
    from ovnk.core.node.wiring import CniNetwork as CniNetwork
    from ovnk.core.node.wiring import InterfaceDriver as InterfaceDriver
    from ovnk.core.ovn.commands import Match as Match
    from ovnk.core.ovn.commands import Parent as Parent
    from ovnk.core.ovn.commands import Ref as Ref
    from ovnk.core.ovn.ids import DbObjectIds as DbObjectIds
    from ovnk.core.ovn.ids import OwnerType as OwnerType
    from ovnk.core.ovn.ids import hashed_name as hashed_name
    from ovnk.core.ovn.ids import parse_ids as parse_ids
    from ovnk.core.ovn.reader import RowSnapshot as RowSnapshot
    from ovnk.core.ovn.sync import RepairPlan as RepairPlan
    from ovnk.core.ovn.txn import NbTxn as NbTxn
    from ovnk.core.ovn.view import DbView as DbView
    from ovnk.core.ovn.view import open_db_view as open_db_view
    from ovnk.core.plugins import OvnkPluginManager as PluginManager
    from ovnk.core.reconcile.spec import ControllerSpec as ControllerSpec
    from ovnk.core.reconcile.spec import PeriodicTask as PeriodicTask
    from ovnk.core.reconcile.spec import ReconcileRequest as ReconcileRequest
    from ovnk.core.reconcile.spec import Watch as Watch
    from ovnk.core.settings import SettingsRegistry as SettingsRegistry
    from ovnk.core.settings import setting as setting
    from ovnk.core.topology.annotations import GatewayConfig as GatewayConfig
    from ovnk.core.topology.annotations import PodNetwork as PodNetwork
    from ovnk.core.topology.intents import ClusterTopology as ClusterTopology
    from ovnk.core.topology.intents import NodeTopology as NodeTopology
    from ovnk.core.topology.intents import PodPort as PodPort
    from ovnk.core.topology.intents import RowIntent as RowIntent
    from ovnk.core.topology.state import NodeFacts as NodeFacts
    from ovnk.core.topology.state import TopologyState as TopologyState


# ``from __future__ import annotations`` binds the name ``annotations`` here, which would shadow the
# public submodule ovnk.annotations (``from ovnk import annotations`` must give the module).
del annotations


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'ovnk' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
