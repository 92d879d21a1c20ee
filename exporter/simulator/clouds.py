"""The Microsoft clouds a scenario can play: Partner Center's token resource and Entra's facts per cloud.

Sources (docs/simulator.md lists them with the rest):
- Partner Center base URLs per cloud, "Partner Center REST URLs":
  https://learn.microsoft.com/partner-center/developer/partner-center-rest-urls (global and US Government share
  https://api.partnercenter.microsoft.com; 21Vianet is https://partner.partnercenterapi.microsoftonline.cn).
- Entra hosts per national cloud, "National clouds":
  https://learn.microsoft.com/entra/identity-platform/authentication-national-cloud
- Microsoft Graph hosts per national cloud, "Microsoft Graph national cloud deployments":
  https://learn.microsoft.com/graph/deployments
The discovery document's `cloud_instance_name` and `tenant_region_scope` are the values those clouds' own
discovery documents carry; nothing in the exporter reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

Cloud = Literal["global", "usgov", "china"]
CLOUDS: Final = frozenset(get_args(Cloud))


@dataclass(frozen=True)
class CloudFacts:
    """What differs between clouds for the two simulated services."""

    resource: str  # Partner Center's resource id: token scope `{resource}/.default`, access token `aud`
    sts: str  # issuer host of v1.0 access tokens: `https://{sts}/{tenant id}/`
    cloud_instance_name: str  # discovery document `cloud_instance_name`
    msgraph_host: str  # discovery document `msgraph_host` (and the userinfo endpoint's host)
    graph_host: str  # discovery document `cloud_graph_host_name` (Azure AD Graph)
    region_scope: str  # discovery document `tenant_region_scope`


FACTS: Final[Mapping[str, CloudFacts]] = {
    "global": CloudFacts(
        resource="https://api.partnercenter.microsoft.com",
        sts="sts.windows.net",
        cloud_instance_name="microsoftonline.com",
        msgraph_host="graph.microsoft.com",
        graph_host="graph.windows.net",
        region_scope="WW",
    ),
    "usgov": CloudFacts(
        resource="https://api.partnercenter.microsoft.com",
        sts="sts.windows.net",
        cloud_instance_name="microsoftonline.us",
        msgraph_host="graph.microsoft.us",
        graph_host="graph.windows.net",
        region_scope="NA",
    ),
    "china": CloudFacts(
        resource="https://partner.partnercenterapi.microsoftonline.cn",
        sts="sts.chinacloudapi.cn",
        cloud_instance_name="partner.microsoftonline.cn",
        msgraph_host="microsoftgraph.chinacloudapi.cn",
        graph_host="graph.chinacloudapi.cn",
        region_scope="AS",
    ),
}
