"""Pulumi's mocks answering as AWS would, for the tests of the Pulumi program (infra_pulumi/):
``test_infra.py``, ``test_deploy_consistency.py`` and the deploy rehearsal.

``AwsMocks`` records every resource (type, name, inputs, outputs) and answers the lookups the
program makes (region, caller identity, default VPC, subnets and their zones, instance type
offerings, images). Names and ARNs are AWS's: buckets, queues and roles that Pulumi auto-names
get the resource's name and a 7-character suffix (``auto_name``), ARNs are in each service's
format, and a resource's id is what the provider reports (a bucket's name, a queue's URL).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
from typing import Any, NamedTuple

import pulumi

from whisperq import defaults

REGION, ACCOUNT = "eu-west-1", "123456789012"
ZONES = {"subnet-a": "eu-west-1a", "subnet-b": "eu-west-1b", "subnet-c": "eu-west-1c"}
VPC_ID = "vpc-default"
STOCK_IMAGE = "ami-stock"  # what a lookup of another owner's images (Ubuntu, ...) finds
BUILT = "2026-01-01T00:00:00.000Z"  # an image's creation date, unless told
# What the EC2 provider answers when an image lookup finds none, or several without
# most_recent (terraform-provider-aws, data source aws_ami).
NO_RESULTS = "Your query returned no results. Please change your search criteria and try again."
MORE_THAN_ONE = (
    "Your query returned more than one result. Please try a more specific search criteria, "
    "or set `most_recent` attribute to true."
)


def auto_name(name: str) -> str:
    """The physical name of a resource Pulumi auto-names: its name and a 7-character suffix
    (random in Pulumi; derived from the name here, so tests can predict it)."""
    return f"{name}-{hashlib.sha256(name.encode()).hexdigest()[:7]}"


def built_image(
    compute: str,
    model: str | None = None,
    image_id: str = "ami-whisperq-baked",
    created: str = BUILT,
) -> dict[str, Any]:
    """An image ami/ built in this account (name and tags as whisperq.pkr.hcl sets them)."""
    tags = {"compute": compute, "model": model or defaults.MODEL[compute], "version": "0.1.0"}
    stamp = created[:10].replace("-", "")
    return {
        "id": image_id,
        "name": f"whisperq-{compute}-0.1.0-{stamp}",
        "tags": tags,
        "creationDate": created,
    }


def matches(image: dict[str, Any], filters: list[dict[str, Any]]) -> bool:
    """Whether an image passes every filter of a lookup (EC2's wildcards: * and ?)."""
    for item in filters:
        name, values = item["name"], item["values"]
        if name == "name":
            value = image["name"]
        elif name == "image-id":
            value = image["id"]
        elif name.startswith("tag:"):
            value = image["tags"].get(name[4:])
        else:
            raise AssertionError(f"the mock does not know filter {name}")
        if value is None or not any(fnmatch.fnmatchcase(value, pattern) for pattern in values):
            return False
    return True


class Resource(NamedTuple):
    typ: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]


class AwsMocks(pulumi.runtime.Mocks):
    """Records every resource (``resources``) and answers the program's lookups:

    - the region and account (``region``, ``account``);
    - the default VPC, its subnets and their zones (``zones``: subnet id -> zone; a subnet
      not in it is in the region's zone "a");
    - the instance types the zones offer (``offered``; None = every type asked for);
    - the images this account owns (``images``: dicts of id, name, tags, creationDate; by
      default, or with ``images_built``, one per compute kind of its default model; none
      without), matched against the lookup's filters: of several, ``most_recent`` picks the
      newest by creation date, and without it the lookup fails as the provider's does.
      Another owner's images (the stock ones) answer ``STOCK_IMAGE``.

    The image and offering lookups are kept in ``ami_lookups`` and ``offering_lookups``.
    """

    def __init__(
        self,
        images_built: bool = True,
        *,
        images: list[dict[str, Any]] | None = None,
        offered: set[str] | None = None,
        region: str = REGION,
        account: str = ACCOUNT,
        zones: dict[str, str] | None = None,
    ) -> None:
        if images is None:
            images = [built_image(kind) for kind in defaults.COMPUTE_KINDS] if images_built else []
        self.images = images
        self.offered = offered
        self.region, self.account = region, account
        self.zones = ZONES if zones is None else zones
        self.resources: list[Resource] = []
        self.ami_lookups: list[dict[str, Any]] = []
        self.offering_lookups: list[dict[str, Any]] = []

    # --- Pulumi's side -----------------------------------------------------------------------

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        inputs = dict(args.inputs)
        outputs = dict(inputs)
        region, account = self.region, self.account
        resource_id = f"{args.name}-id"
        if args.typ == "aws:s3/bucket:Bucket":
            bucket = inputs.get("bucket") or auto_name(args.name)
            outputs.update(bucket=bucket, arn=f"arn:aws:s3:::{bucket}")
            resource_id = bucket
        elif args.typ == "aws:sqs/queue:Queue":
            queue = inputs.get("name") or auto_name(args.name)
            url = f"https://sqs.{region}.amazonaws.com/{account}/{queue}"
            outputs.update(name=queue, url=url, arn=f"arn:aws:sqs:{region}:{account}:{queue}")
            resource_id = url
        elif args.typ == "aws:cloudwatch/logGroup:LogGroup":
            outputs["arn"] = f"arn:aws:logs:{region}:{account}:log-group:{inputs['name']}"
        elif args.typ == "aws:iam/role:Role":
            role = inputs.get("name") or auto_name(args.name)
            outputs.update(name=role, arn=f"arn:aws:iam::{account}:role/{role}")
            resource_id = role
        service = args.typ.split(":")[1].split("/")[0]
        outputs.setdefault("name", args.name)
        outputs.setdefault("arn", f"arn:aws:{service}:{region}:{account}:{args.name}")
        self.resources.append(Resource(args.typ, args.name, inputs, outputs))
        return [resource_id, outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        token, inputs = args.token, dict(args.args)
        region, account = self.region, self.account
        if token == "aws:index/getRegion:getRegion":
            return {"region": region, "name": region, "id": region}
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": account, "arn": f"arn:aws:iam::{account}:root", "id": account}
        if token == "aws:ec2/getVpc:getVpc":
            return {"id": VPC_ID}
        if token == "aws:ec2/getSubnets:getSubnets":
            return {"id": "subnets", "ids": list(self.zones)}
        if token == "aws:ec2/getSubnet:getSubnet":
            zone = self.zones.get(inputs["id"], f"{region}a")
            return {"id": inputs["id"], "availabilityZone": zone}
        if token == "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings":
            self.offering_lookups.append(inputs)
            filters = {item["name"]: item["values"] for item in inputs["filters"]}
            asked = filters["instance-type"]
            found = [name for name in asked if self.offered is None or name in self.offered]
            return {
                "id": region,
                "instanceTypes": found,
                "locations": [filters["location"][0]] * len(found),
                "locationTypes": ["availability-zone"] * len(found),
            }
        if token == "aws:ec2/getAmi:getAmi":
            return self._image(inputs)
        return {}

    def _image(self, lookup: dict[str, Any]):
        self.ami_lookups.append(lookup)
        if lookup.get("owners") not in (["self"], None):
            return {"id": STOCK_IMAGE}
        found = [image for image in self.images if matches(image, lookup.get("filters", []))]
        if not found:
            return {}, [("", NO_RESULTS)]
        if len(found) > 1 and not lookup.get("mostRecent"):
            return {}, [("", MORE_THAN_ONE)]
        image = max(found, key=lambda image: image.get("creationDate", ""))
        return {key: image[key] for key in ("id", "name", "tags", "creationDate") if key in image}

    # --- the tests' side -----------------------------------------------------------------------

    def of_type(self, typ: str) -> list[tuple[str, dict[str, Any]]]:
        """(name, outputs) of every resource of a type, in the order they were made."""
        return [(r.name, r.outputs) for r in self.resources if r.typ == typ]

    def by_name(self, typ: str) -> dict[str, dict[str, Any]]:
        """Outputs of every resource of a type, by name (names must not repeat)."""
        pairs = self.of_type(typ)
        found = dict(pairs)
        assert len(found) == len(pairs), (typ, [name for name, _ in pairs])
        return found

    def one_with_inputs(
        self, typ: str, name: str | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(inputs, outputs) of the one resource of a type (and name)."""
        found = [r for r in self.resources if r.typ == typ and (name is None or r.name == name)]
        assert len(found) == 1, (typ, name, [r.name for r in self.resources if r.typ == typ])
        return found[0].inputs, found[0].outputs

    def one(self, typ: str, name: str | None = None) -> dict[str, Any]:
        """Outputs of the one resource of a type (and name)."""
        return self.one_with_inputs(typ, name)[1]

    def policy(self, name: str) -> dict[str, Any]:
        """The document of a role's inline policy, as declared."""
        (inputs, _) = self.one_with_inputs("aws:iam/rolePolicy:RolePolicy", name)
        return json.loads(inputs["policy"])

    def user_data(self) -> str:
        """The launch template's user data, decoded."""
        template = self.one("aws:ec2/launchTemplate:LaunchTemplate")
        return base64.b64decode(template["userData"]).decode()
