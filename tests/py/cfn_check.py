#!/usr/bin/env python3
"""Creates the stacks of jobs/cloudformation/ in moto's CloudFormation and checks what exists.

Usage: cfn_check.py ENDPOINT TEMPLATE_DIR   (ENDPOINT: a moto_server, http://127.0.0.1:PORT)

Every value checked is read back from moto's services (S3, IAM, ECS, Logs, Glue, Scheduler),
never from the template. moto 5.2's CloudFormation creates AWS::S3::Bucket (tags and
BucketEncryption only: no public access block, versioning, lifecycle rules, ownership
controls, Object Lock), AWS::IAM::Role (inline policies; ManagedPolicyArns not attached), AWS::ECS::Cluster,
AWS::ECS::TaskDefinition (container definitions; no task role, CPU or compatibilities),
AWS::Logs::LogGroup; it skips AWS::S3::BucketPolicy, AWS::Glue::Database, AWS::Glue::Table
and AWS::Scheduler::Schedule (and leaves a null where AWS::NoValue drops a list item). For
those, the resource's properties are resolved here from the template (parameters, conditions,
and the physical ids of what moto created), sent through the service's own API, and read back:
so at least the definitions are accepted by that API, refer to things that exist, and mean
what Athena, S3 and the scheduler need. The archive bucket's Object Lock (ObjectLockEnabled and
its default retention) is applied the same way, with PutObjectLockConfiguration on the bucket
moto's CloudFormation made, and then shown to hold in moto's S3: an object written there gets
the retention, its version cannot be deleted, and a delete marker over it can be removed. The
template's Rules, which moto ignores, are evaluated here. Exits non-zero with a message on the
first mismatch. Run by tests/cloudformation.rs.
"""

import ast
import datetime
import fnmatch
import json
import re
import sys

import boto3
import yaml


class Mismatch(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Mismatch(what)


REGION = "eu-west-1"
EXTERNAL_ID = "archiver-ext-7f3a"
SUBNETS = ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"]
SECURITY_GROUP = "sg-0123456789abcdef0"
MEMBERS = ["111111111111", "222222222222"]


# ------------------------------------------------------------------ the template, resolved


class Tagged(dict):
    pass


def load(path):
    """The template with CloudFormation's short forms (!Ref, !Sub, ...) as their long forms."""

    class Loader(yaml.SafeLoader):
        pass

    def construct(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if suffix == "Ref":
            return {"Ref": value}
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {"Fn::" + suffix: value}

    Loader.add_multi_constructor("!", construct)
    with open(path) as f:
        return yaml.load(f, Loader=Loader)


NO_VALUE = object()


class Resolver:
    def __init__(self, template, params, pseudo, refs, atts):
        self.params = {}
        for k, p in template.get("Parameters", {}).items():
            v = params.get(k, p.get("Default"))
            check(v is not None, f"parameter {k} has no value")
            is_list = p["Type"].startswith("List<") or p["Type"] == "CommaDelimitedList"
            self.params[k] = v.split(",") if is_list else str(v)
        self.pseudo = pseudo
        self.refs = refs
        self.atts = atts
        self.conditions = {}
        for k, c in template.get("Conditions", {}).items():
            self.conditions[k] = self.value(c)

    def ref(self, name):
        if name == "AWS::NoValue":
            return NO_VALUE
        for table in (self.pseudo, self.params, self.refs):
            if name in table:
                return table[name]
        raise Mismatch(f"Ref {name}: unknown")

    def value(self, x):
        if isinstance(x, list):
            out = [self.value(v) for v in x]
            return [v for v in out if v is not NO_VALUE]
        if not isinstance(x, dict):
            return x
        if len(x) == 1:
            (k, v), = x.items()
            if k == "Ref":
                return self.ref(v)
            if k == "Fn::GetAtt":
                return self.atts[".".join(v)]
            if k == "Fn::Sub":
                def sub(m):
                    name = m.group(1)
                    if name.startswith("!"):
                        return "${" + name[1:] + "}"
                    if "." in name:
                        return self.atts[name]
                    return str(self.ref(name))
                return re.sub(r"\$\{([^}]+)\}", sub, v)
            if k == "Fn::If":
                return self.value(v[1] if self.conditions[v[0]] else v[2])
            if k == "Fn::Equals":
                a, b = (self.value(y) for y in v)
                return str(a) == str(b)
            if k == "Fn::Not":
                return not self.value(v[0])
            if k == "Fn::And":
                return all(self.value(y) for y in v)
            if k == "Fn::Join":
                return v[0].join(str(y) for y in self.value(v[1]))
            if k == "Fn::Split":
                return self.value(v[1]).split(v[0])
            if k.startswith("Fn::"):
                raise Mismatch(f"{k}: not resolved by this check")
        out = {k: self.value(v) for k, v in x.items()}
        return {k: v for k, v in out.items() if v is not NO_VALUE}

    def failed_rules(self, template):
        """The template's Rules whose condition holds and an assertion fails, by name."""
        out = []
        for name, rule in template.get("Rules", {}).items():
            if "RuleCondition" in rule and not self.value(rule["RuleCondition"]):
                continue
            if not all(self.value(a["Assert"]) for a in rule["Assertions"]):
                out.append(name)
        return out


# ------------------------------------------------------------------ moto


def clients(endpoint):
    kw = dict(
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    return {
        n: boto3.client(n, **kw)
        for n in ["cloudformation", "s3", "iam", "ecs", "logs", "glue", "scheduler", "kms", "sts"]
    }


def create_stack(c, name, body, params):
    c["cloudformation"].create_stack(
        StackName=name,
        TemplateBody=body,
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
    )
    stack = c["cloudformation"].describe_stacks(StackName=name)["Stacks"][0]
    check(
        stack["StackStatus"] == "CREATE_COMPLETE",
        f"stack {name}: {stack['StackStatus']} {stack.get('StackStatusReason')}",
    )
    resources = {
        r["LogicalResourceId"]: r
        for r in c["cloudformation"].list_stack_resources(StackName=name)["StackResourceSummaries"]
    }
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return resources, outputs


def statements(doc):
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except ValueError:
            # moto returns an inline policy that CloudFormation created as Python's repr of it.
            doc = ast.literal_eval(doc)
    # moto keeps a null where AWS::NoValue removes a list item; IAM would not.
    return [s for s in doc["Statement"] if s is not None]


def as_list(x):
    return x if isinstance(x, list) else [x]


def allows(stmts, action, resource, effect="Allow"):
    """Whether an Allow statement (without conditions) of `stmts` grants `action` on `resource`."""
    for s in stmts:
        if s["Effect"] != effect:
            continue
        if any(fnmatch.fnmatchcase(action, a) for a in as_list(s["Action"])) and any(
            fnmatch.fnmatchcase(resource, r) for r in as_list(s["Resource"])
        ):
            return True
    return False


def refuses(stmts, action, resource):
    """Whether a Deny statement of `stmts` without conditions refuses `action` on `resource`."""
    return allows([s for s in stmts if "Condition" not in s], action, resource, effect="Deny")


def role_of_arn(c, arn):
    return c["iam"].get_role(RoleName=arn.rsplit("/", 1)[1])["Role"]


def inline_policies(c, role_name):
    names = c["iam"].list_role_policies(RoleName=role_name)["PolicyNames"]
    out = []
    for n in names:
        out += statements(c["iam"].get_role_policy(RoleName=role_name, PolicyName=n)["PolicyDocument"])
    return out


# ------------------------------------------------------------------ the archive account


def lock_probe(c, bucket, key, days):
    """In a bucket with Object Lock: an object written there (with its checksum, as S3 requires)
    gets the bucket's default retention, its version cannot be deleted, a delete only hides it
    behind a delete marker, and deleting the marker's version (what `verify --repair` does)
    brings it back, still one version."""
    s3 = c["s3"]
    put = s3.put_object(Bucket=bucket, Key=key, Body=b"locked", ChecksumAlgorithm="SHA256")
    version = put["VersionId"]
    head = s3.head_object(Bucket=bucket, Key=key)
    check(head.get("ObjectLockMode") == "GOVERNANCE", f"{key}: lock mode {head.get('ObjectLockMode')}")
    until = head["ObjectLockRetainUntilDate"]
    wanted = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)
    check(abs((until - wanted).total_seconds()) < 3600, f"{key}: kept until {until}, wanted about {wanted}")

    def refused(**kw):
        try:
            s3.delete_object(Bucket=bucket, Key=key, **kw)
        except s3.exceptions.ClientError as e:
            return e.response["Error"]["Code"]
        return None

    check(refused(VersionId=version) == "AccessDenied", f"{key}: a locked version was deleted")
    marker = s3.delete_object(Bucket=bucket, Key=key)
    check(marker.get("DeleteMarker") is True, f"{key}: delete gave {marker}")
    try:
        s3.head_object(Bucket=bucket, Key=key)
        raise Mismatch(f"{key} is still visible under its delete marker")
    except s3.exceptions.ClientError as e:
        check(e.response["Error"]["Code"] in ("404", "NoSuchKey", "405"), f"{key}: {e}")
    check(refused(VersionId=marker["VersionId"]) is None, f"{key}: the delete marker cannot be removed")
    back = s3.head_object(Bucket=bucket, Key=key)
    check(back["VersionId"] == version, f"{key}: back as {back['VersionId']}, not {version}")
    listed = s3.list_object_versions(Bucket=bucket, Prefix=key)
    check(
        [v["VersionId"] for v in listed.get("Versions", [])] == [version] and not listed.get("DeleteMarkers"),
        f"{key}: versions {listed.get('Versions')}, markers {listed.get('DeleteMarkers')}",
    )


def archive_stack(c, tdir, name, params):
    body = open(f"{tdir}/archive-account.yaml").read()
    template = load(f"{tdir}/archive-account.yaml")
    resources, outputs = create_stack(c, name, body, params)
    account = c["sts"].get_caller_identity()["Account"]
    created = {k for k, r in resources.items() if r.get("ResourceType")}

    # -- the buckets: moto applies the encryption. With Object Lock, a second bucket holds the
    # state and the staged files.
    locked = params.get("ObjectLock", template["Parameters"]["ObjectLock"]["Default"]) == "Enabled"
    lock_days = int(params.get("ObjectLockRetentionDays", template["Parameters"]["ObjectLockRetentionDays"]["Default"]))
    lock_days = lock_days if locked else 0
    bucket = outputs["BucketName"]
    state_bucket = outputs.get("StateBucketName")
    check((state_bucket is not None) == (lock_days > 0), f"state bucket {state_bucket} with {lock_days} days of lock")
    check(state_bucket != bucket, "the state bucket is the archive bucket")
    if params.get("StateBucketName"):
        check(state_bucket == params["StateBucketName"], f"state bucket {state_bucket}")
    names = [b["Name"] for b in c["s3"].list_buckets()["Buckets"]]
    for b in [bucket] + ([state_bucket] if state_bucket else []):
        check(b in names, f"no bucket {b}")
        enc = c["s3"].get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]
        default = enc["Rules"][0]["ApplyServerSideEncryptionByDefault"]
        if params.get("KmsKeyArn"):
            check(default == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": params["KmsKeyArn"]}, f"{b}: SSE {enc}")
        else:
            check(default == {"SSEAlgorithm": "AES256"}, f"{b}: SSE {enc}")
    work = state_bucket or bucket  # where the state and the staged files are

    # -- the task definition, its roles, the log group, the cluster
    cluster_arn = outputs["ClusterArn"]
    check(c["ecs"].describe_clusters(clusters=[cluster_arn])["clusters"][0]["status"] == "ACTIVE", "cluster")
    td_arn = outputs["TaskDefinitionArn"]
    td = c["ecs"].describe_task_definition(taskDefinition=td_arn)["taskDefinition"]
    (container,) = td["containerDefinitions"]
    # moto keeps a null where AWS::NoValue drops an item (ARCHIVER_SIGN_KEY without a key).
    environment = [e for e in container["environment"] if e is not None]
    env = {e["name"]: e["value"] for e in environment}
    check(len(env) == len(environment), f"a variable twice: {environment}")
    check(container["image"] == params["Image"], f"image {container['image']}")
    check(container["command"] == ["--log-format", "json", "run"], f"command {container['command']}")
    check(container["user"] == "10001:10001" and container["readonlyRootFilesystem"], "user")
    caps = container.get("linuxParameters", {}).get("capabilities", {})
    check(caps.get("drop") == ["ALL"] and not caps.get("add"), f"capabilities {caps}")
    check(container["stopTimeout"] == 60, "stopTimeout")
    prefix = params.get("Prefix", "archiver")
    want = {
        "AWS_REGION": REGION,
        "ARCHIVER_STATE": f"s3://{work}/state/archiver.db",
        "ARCHIVER_OUTPUT": f"s3://{bucket}/{prefix}",
        "ARCHIVER_S3_EXPECTED_BUCKET_OWNER": account,
        "ARCHIVER_REGIONS": params.get("Regions") or REGION,
        "ARCHIVER_ACCOUNT_ROLE": params.get("MemberRoleName", "archiver-read"),
        "ARCHIVER_EXTERNAL_ID": params["ExternalId"],
        "ARCHIVER_GLUE_TABLE": outputs["GlueTableName"],
        "ARCHIVER_GLUE_PARTITIONS": "true",
        "ARCHIVER_CONCURRENCY": "4",
    }
    if params.get("AccountIds"):
        want["ARCHIVER_ACCOUNTS"] = params["AccountIds"]
    else:
        want["ARCHIVER_ORGANIZATION"] = "true"
    if params.get("DigestSigningKeyArn"):
        want["ARCHIVER_SIGN_KEY"] = params["DigestSigningKeyArn"]
    if lock_days:
        # Staged under PREFIX/_staging/ of the state bucket.
        want["ARCHIVER_STAGING"] = f"s3://{state_bucket}/{prefix}"
        check(outputs["StagingUri"] == want["ARCHIVER_STAGING"], f"StagingUri {outputs['StagingUri']}")
    check(outputs["StateUri"] == want["ARCHIVER_STATE"], f"StateUri {outputs['StateUri']}")
    check(env == want, f"environment {env}, wanted {want}")
    logs = container["logConfiguration"]["options"]
    groups = c["logs"].describe_log_groups(logGroupNamePrefix=logs["awslogs-group"])["logGroups"]
    check([g["retentionInDays"] for g in groups] == [90], f"log group {groups}")
    check(logs["awslogs-region"] == REGION, f"awslogs {logs}")

    task_role = role_of_arn(c, outputs["TaskRoleArn"])
    maint_role = role_of_arn(c, outputs["MaintenanceRoleArn"])
    state_key = env["ARCHIVER_STATE"].removeprefix("s3://")
    out_key = env["ARCHIVER_OUTPUT"].removeprefix("s3://")
    for role in [task_role, maint_role]:
        trust = statements(role["AssumeRolePolicyDocument"])
        check(
            [s["Principal"] for s in trust] == [{"Service": "ecs-tasks.amazonaws.com"}]
            and trust[0]["Condition"]["StringEquals"] == {"aws:SourceAccount": account},
            f"{role['RoleName']} trust {trust}",
        )
    # What each role may do with which key (conditions aside; they are checked below).
    staged = f"{work}/{prefix}/_staging/portal_id=p/part-1.tmp"
    published = f"{out_key}/sessions/portal_id=p/start_date=2026-01-01/part-1.parquet"
    manifest = f"{out_key}/_manifest/portal_id=p/m.json"
    digest = f"{out_key}/_digest/state_id=s/0000000001.json"
    claim = f"{out_key}/_claim/portal_id=p.json"
    archived = [published, manifest, digest, claim]
    probe = state_key + ".probe-0123"
    keys = [state_key, state_key + ".lease", probe, staged] + archived
    want = {
        "s3:GetObject": set(keys),
        "s3:PutObject": set(keys),
        # With Object Lock, also a failed upload in parts to a file's final key.
        "s3:AbortMultipartUpload": {staged, published} if lock_days else {staged},
    }
    nightly_deletes = {staged, probe}
    # Without Object Lock, compact and verify --repair delete the files they replaced; with
    # it, nothing is deleted in the archive bucket, and only a delete marker's version is.
    maint_deletes = nightly_deletes if lock_days else nightly_deletes | {published}
    roles = [(task_role, nightly_deletes, set()), (maint_role, maint_deletes, {published} if lock_days else set())]
    perms_of = {}
    for role, deletes, version_deletes in roles:
        name = role["RoleName"]
        perms = perms_of[name] = inline_policies(c, name)
        for action, allowed in dict(
            want, **{"s3:DeleteObject": deletes, "s3:DeleteObjectVersion": version_deletes}
        ).items():
            for key in keys:
                got = allows(perms, action, f"arn:aws:s3:::{key}")
                check(got == (key in allowed), f"{name}: {action} on {key} is {'' if got else 'not '}allowed")
            for b in {bucket, work}:
                check(not allows(perms, action, f"arn:aws:s3:::{b}/elsewhere/x"), f"{name}: {action} elsewhere")
            check(not allows(perms, action, f"arn:aws:s3:::other-bucket/{out_key}/x"), f"{name}: {action} on another bucket")
        for action in ["s3:ListBucket", "s3:GetBucketObjectLockConfiguration"]:
            for b in {bucket, work}:
                check(allows(perms, action, f"arn:aws:s3:::{b}"), f"{name} lacks {action} on {b}")
        # Uploads left by a killed run are looked for where files are staged.
        check(allows(perms, "s3:ListBucketMultipartUploads", f"arn:aws:s3:::{work}"), f"{name} lacks s3:ListBucketMultipartUploads")
        for st in perms:
            if st["Effect"] == "Allow" and any(a.startswith("s3:") for a in as_list(st["Action"])):
                check(
                    st["Condition"]["StringEquals"].get("s3:ResourceAccount") == account,
                    f"{name}: S3 statement {st['Sid']} not limited to s3:ResourceAccount {account}",
                )
        (listing,) = [st for st in perms if st["Action"] == "s3:ListBucket"]
        check(
            sorted(listing["Condition"]["StringLike"]["s3:prefix"]) == sorted([f"{prefix}/*", "state/*"]),
            f"{name}: s3:ListBucket condition {listing['Condition']}",
        )
        # With Object Lock: verify lists the versions under the archive (delete markers), and
        # whatever else the role is given, it never deletes, unlocks or hides an archived
        # object. Without it, nothing of the kind.
        versions = [st for st in perms if st["Action"] == "s3:ListBucketVersions"]
        if lock_days:
            check(
                [(st["Resource"], st["Condition"]["StringLike"]) for st in versions]
                == [(f"arn:aws:s3:::{bucket}", {"s3:prefix": f"{prefix}/*"})],
                f"{name}: s3:ListBucketVersions {versions}",
            )
            refused = ["s3:BypassGovernanceRetention", "s3:PutObjectRetention", "s3:PutObjectLegalHold", "s3:DeleteObject"]
            if role is task_role:
                refused.append("s3:DeleteObjectVersion")
            for action in refused:
                for key in archived + [f"{out_key}/anything"]:
                    check(refuses(perms, action, f"arn:aws:s3:::{key}"), f"{name}: {action} on {key} is not denied")
            check(not refuses(perms, "s3:DeleteObject", f"arn:aws:s3:::{staged}"), f"{name}: staged deletes denied")
            if role is maint_role:
                check(not refuses(perms, "s3:DeleteObjectVersion", f"arn:aws:s3:::{published}"), f"{name} cannot remove a delete marker")
        else:
            check(versions == [], f"{name}: s3:ListBucketVersions without Object Lock")
            check([st for st in perms if st["Effect"] != "Allow"] == [], f"{name}: Deny statements without Object Lock")
        role_name = env["ARCHIVER_ACCOUNT_ROLE"]
        for m in MEMBERS:
            check(allows(perms, "sts:AssumeRole", f"arn:aws:iam::{m}:role/{role_name}"), f"cannot assume {role_name} in {m}")
            check(not allows(perms, "sts:AssumeRole", f"arn:aws:iam::{m}:role/admin"), "assumes any role")
        (assume,) = [st for st in perms if st["Action"] == "sts:AssumeRole"]
        if params.get("AccountIds"):
            limit = {"StringEquals": {"aws:ResourceAccount": params["AccountIds"].split(",")}}
        else:
            limit = {"StringEquals": {"aws:ResourceOrgID": params["OrganizationId"]}}
        check(assume["Condition"] == limit, f"{name}: AssumeRole condition {assume['Condition']}, wanted {limit}")
        org = allows(perms, "organizations:ListAccounts", "*")
        check(org == ("ARCHIVER_ORGANIZATION" in env), f"organizations:ListAccounts granted: {org}")
        signing = [s for s in perms if set(as_list(s["Action"])) & {"kms:Sign", "kms:GetPublicKey"}]
        if params.get("DigestSigningKeyArn"):
            check(
                [(sorted(as_list(s["Action"])), s["Resource"], s.get("Condition")) for s in signing]
                == [(["kms:GetPublicKey", "kms:Sign"], params["DigestSigningKeyArn"], None)],
                f"{name}: signing statement {signing}",
            )
        else:
            check(signing == [], f"{name}: signing statement without a key: {signing}")
        kms = [
            s for s in perms if any(a.startswith("kms:") for a in as_list(s["Action"])) and s not in signing
        ]
        if params.get("KmsKeyArn"):
            check(
                [s["Resource"] for s in kms] == [params["KmsKeyArn"]]
                and kms[0]["Condition"]
                == {
                    "StringEquals": {"kms:ViaService": f"s3.{REGION}.amazonaws.com"},
                    "StringLike": {
                        "kms:EncryptionContext:aws:s3:arn": [
                            f"arn:aws:s3:::{bucket}",
                            f"arn:aws:s3:::{out_key}/*",
                            f"arn:aws:s3:::{bucket}/state/*",
                        ]
                        if not lock_days
                        else [
                            f"arn:aws:s3:::{bucket}",
                            f"arn:aws:s3:::{out_key}/*",
                            f"arn:aws:s3:::{work}",
                            f"arn:aws:s3:::{work}/{prefix}/*",
                            f"arn:aws:s3:::{work}/state/*",
                        ]
                    },
                },
                f"{name}: KMS statement {kms}",
            )
        else:
            check(kms == [], f"{name}: KMS statement without a key: {kms}")
    perms = perms_of[task_role["RoleName"]]
    db, table = env["ARCHIVER_GLUE_TABLE"].split(".")
    for arn in ["catalog", f"database/{db}", f"table/{db}/{table}"]:
        for action in ["glue:GetTable", "glue:UpdateTable", "glue:BatchCreatePartition"]:
            full = f"arn:aws:glue:{REGION}:{account}:{arn}"
            check(allows(perms, action, full), f"task role lacks {action} on {full}")
    for action in ["glue:UpdateTable", "glue:BatchCreatePartition"]:
        check(not allows(perms, action, f"arn:aws:glue:{REGION}:{account}:table/{db}/other"), "glue *")
    shared = {
        "s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetObject", "s3:PutObject",
        "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:GetBucketObjectLockConfiguration",
        "kms:GenerateDataKey", "kms:Decrypt", "kms:Sign", "kms:GetPublicKey",
        "sts:AssumeRole", "organizations:ListAccounts",
    }
    if lock_days:
        shared.add("s3:ListBucketVersions")
    glue_actions = {"glue:GetTable", "glue:UpdateTable", "glue:BatchCreatePartition"}
    maint_extra = {"s3:DeleteObjectVersion"} if lock_days else set()
    for role, extra in [(task_role, glue_actions), (maint_role, maint_extra)]:
        granted = {a for s in perms_of[role["RoleName"]] if s["Effect"] == "Allow" for a in as_list(s["Action"])}
        check(granted <= shared | extra, f"{role['RoleName']} grants more: {granted - shared - extra}")

    # -- what moto's CloudFormation skips: resolved from the template, through the real APIs
    skipped = {"BucketPolicy", "StateBucketPolicy", "GlueDatabase", "GlueTable", "Schedule"}
    pseudo = {"AWS::AccountId": account, "AWS::Region": REGION, "AWS::Partition": "aws", "AWS::StackName": name}
    # The conditions, and the Rules moto ignores (CloudFormation would refuse the stack).
    r = Resolver(template, params, pseudo, {}, {})
    check(r.failed_rules(template) == [], f"rules fail: {r.failed_rules(template)}")
    conditional = {k for k, v in template["Resources"].items() if not r.conditions.get(v.get("Condition"), True)}
    check(("StateBucket" in conditional) == (not lock_days), f"resources left out: {conditional}")
    check(created >= set(template["Resources"]) - skipped - conditional - {"Cluster"}, f"created: {created}")
    check(not (created & conditional), f"created {created & conditional}, whose condition is false")
    check(not (created & skipped), f"moto now creates {created & skipped}: check them from the stack")
    refs = {k: r["PhysicalResourceId"] for k, r in resources.items() if r.get("ResourceType")}
    atts = {
        "Bucket.Arn": f"arn:aws:s3:::{bucket}",
        "TaskRole.Arn": task_role["Arn"],
        "MaintenanceRole.Arn": maint_role["Arn"],
        "TaskExecutionRole.Arn": role_of_arn(c, td["executionRoleArn"])["Arn"]
        if td.get("executionRoleArn")
        else c["iam"].get_role(RoleName=refs["TaskExecutionRole"])["Role"]["Arn"],
        "SchedulerRole.Arn": c["iam"].get_role(RoleName=refs["SchedulerRole"])["Role"]["Arn"],
        "Cluster.Arn": cluster_arn,
    }
    if state_bucket:
        atts["StateBucket.Arn"] = f"arn:aws:s3:::{state_bucket}"
    r = Resolver(template, params, pseudo, refs, atts)
    # Ref of an AWS::Glue::Database is its name.
    gdb = r.value(template["Resources"]["GlueDatabase"]["Properties"])
    r.refs["GlueDatabase"] = gdb["DatabaseInput"]["Name"]
    props = {k: r.value(v.get("Properties", {})) for k, v in template["Resources"].items() if k not in conditional}

    # S3 settings moto's CloudFormation ignores, put with the S3 API and read back.
    def settings(bucket, b):
        c["s3"].put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=b["PublicAccessBlockConfiguration"])
        pab = c["s3"].get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        check(all(pab[k] is True for k in ["BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"]), f"{bucket}: PAB {pab}")
        c["s3"].put_bucket_versioning(Bucket=bucket, VersioningConfiguration=b["VersioningConfiguration"])
        check(c["s3"].get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled", f"{bucket}: versioning")
        rules = []
        for rule in b["LifecycleConfiguration"]["Rules"]:
            api = {"ID": rule["Id"], "Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
            if "ExpirationInDays" in rule:
                api["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
            if "AbortIncompleteMultipartUpload" in rule:
                api["AbortIncompleteMultipartUpload"] = {
                    "DaysAfterInitiation": int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
                }
            if "NoncurrentVersionExpiration" in rule:
                api["NoncurrentVersionExpiration"] = {
                    "NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
                }
            rules.append(api)
        c["s3"].put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
        return c["s3"].get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]

    lifecycle = {bucket: settings(bucket, props["Bucket"])}
    if lock_days:
        lifecycle[work] = settings(work, props["StateBucket"])

    def expires_after(bucket, key):
        """Days after which the current version of `key` expires, or None."""
        days = [
            x["Expiration"]["Days"]
            for x in lifecycle[bucket]
            if x["Status"] == "Enabled" and "Expiration" in x and key.startswith(x["Filter"].get("Prefix", ""))
        ]
        return min(days) if days else None

    staging_days = int(params.get("StagingExpirationDays", "0")) or None
    for b, key, days in [
        (bucket, f"{prefix}/sessions/portal_id=p/start_date=2026-01-01/part-1.parquet", None),
        (bucket, f"{prefix}/_manifest/portal_id=p/0001.json", None),
        (bucket, f"{prefix}/_claim/portal_id=p.json", None),
        (bucket, f"{prefix}/_digest/state_id=s/0000000001.json", None),
        (work, f"{prefix}/_staging/portal_id=p/part-1.tmp", staging_days),
        (work, "state/archiver.db", None),
        (work, "state/archiver.db.lease", None),
    ]:
        got = expires_after(b, key)
        check(got == days, f"{b}/{key} expires after {got} days, wanted {days}")
    for b, back in lifecycle.items():
        aborts = [x for x in back if "AbortIncompleteMultipartUpload" in x]
        check(
            [(x["Filter"].get("Prefix", ""), x["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]) for x in aborts]
            == [("", 1)],
            f"{b}: abort rule {aborts}",
        )
        noncurrent = sorted(
            (x["Filter"]["Prefix"], x["NoncurrentVersionExpiration"]["NoncurrentDays"])
            for x in back
            if "NoncurrentVersionExpiration" in x
        )
        # Noncurrent versions of the state and the staged files only: with Object Lock, the
        # archive bucket has none (a version hidden by a delete marker is kept).
        want = [(f"{prefix}/_staging/", 1), ("state/", 30)] if b == work else []
        check(noncurrent == want, f"{b}: noncurrent {noncurrent}, wanted {want}")
        if b != work:
            check([x for x in back if "Expiration" in x] == [], f"{b}: expiration rules {back}")

    # Object Lock, which moto's CloudFormation leaves out: the template's configuration put on
    # the bucket it made, read back, and shown to hold.
    b = props["Bucket"]
    if lock_days:
        check(b.get("ObjectLockEnabled") is True, f"ObjectLockEnabled {b.get('ObjectLockEnabled')}")
        conf = json.loads(json.dumps(b["ObjectLockConfiguration"]))
        retention = conf["Rule"]["DefaultRetention"]
        for unit in ["Days", "Years"]:
            if unit in retention:
                retention[unit] = int(retention[unit])  # a Ref of a Number parameter reads as text
        c["s3"].put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=conf)
        conf = c["s3"].get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
        retention = conf.get("Rule", {}).get("DefaultRetention", {})
        check(
            conf["ObjectLockEnabled"] == "Enabled"
            and retention.get("Mode") == "GOVERNANCE"
            and retention.get("Days") == lock_days
            and not retention.get("Years"),
            f"Object Lock {conf}, wanted governance for {lock_days} days",
        )
        lock_probe(c, bucket, f"{prefix}/sessions/portal_id=p/start_date=2026-01-01/probe.parquet", lock_days)
    else:
        check("ObjectLockEnabled" not in b and "ObjectLockConfiguration" not in b, f"Object Lock without days: {b}")
    for unlocked in {work} - {bucket} if lock_days else [bucket]:
        try:
            got = c["s3"].get_object_lock_configuration(Bucket=unlocked)
            raise Mismatch(f"{unlocked} has Object Lock: {got}")
        except c["s3"].exceptions.ClientError as e:
            code = e.response["Error"]["Code"]
            check(code == "ObjectLockConfigurationNotFoundError", f"{unlocked}: {code}")

    pol = props["BucketPolicy"]
    check(pol["Bucket"] == bucket, f"policy bucket {pol['Bucket']}")
    c["s3"].put_bucket_policy(Bucket=bucket, Policy=json.dumps(pol["PolicyDocument"]))
    denies = {st["Sid"]: st for st in statements(c["s3"].get_bucket_policy(Bucket=bucket)["Policy"])}
    check(all(st["Effect"] == "Deny" and st["Principal"] == "*" for st in denies.values()), f"bucket policy {denies}")
    want_sids = {
        "DenyInsecureTransport", "DenyDeletingManifests", "DenyOverwritingManifests",
        "DenyReadingSessionsButToTheJobAndTheReaders",
    }
    if params.get("KmsKeyArn"):
        want_sids |= {"DenyWritesNotEncryptedWithKms", "DenyWritesWithAnotherKmsKey"}
    if lock_days:
        want_sids |= {"DenyDeletingArchivedFiles", "DenyDeletingArchivedFileVersionsButToRepair"}
    check(set(denies) == want_sids, f"bucket policy statements {sorted(denies)}, wanted {sorted(want_sids)}")
    tls = denies["DenyInsecureTransport"]
    check(
        tls["Action"] == "s3:*"
        and sorted(tls["Resource"]) == [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
        and tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}},
        f"bucket policy {tls}",
    )
    # The manifests, the digests and the portals' claims: never deleted, never overwritten.
    manifests = sorted(
        [f"arn:aws:s3:::{out_key}/_manifest/*", f"arn:aws:s3:::{out_key}/_digest/*", f"arn:aws:s3:::{out_key}/_claim/*"]
    )
    d = denies["DenyDeletingManifests"]
    check(
        sorted(d["Resource"]) == manifests and sorted(d["Action"]) == ["s3:DeleteObject", "s3:DeleteObjectVersion"]
        and "Condition" not in d,
        f"manifest deletes {d}",
    )
    o = denies["DenyOverwritingManifests"]
    check(
        sorted(o["Resource"]) == manifests and o["Action"] == "s3:PutObject"
        and o["Condition"] == {"Null": {"s3:if-none-match": "true"}},
        f"manifest overwrites {o}",
    )
    if lock_days:
        # Nobody hides an archived file behind a delete marker; only the maintenance role
        # deletes a version there (a marker: a locked version cannot be).
        d = denies["DenyDeletingArchivedFiles"]
        check(
            d["Action"] == "s3:DeleteObject" and d["Resource"] == f"arn:aws:s3:::{out_key}/sessions/*"
            and "Condition" not in d,
            f"archived file deletes {d}",
        )
        v = denies["DenyDeletingArchivedFileVersionsButToRepair"]
        check(
            v["Action"] == "s3:DeleteObjectVersion" and v["Resource"] == f"arn:aws:s3:::{out_key}/sessions/*"
            and v["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": maint_role["Arn"]}},
            f"archived version deletes {v}",
        )
        # The state bucket's policy: TLS only, and with a KMS key that key only.
        sp = props["StateBucketPolicy"]
        check(sp["Bucket"] == work, f"state bucket policy on {sp['Bucket']}")
        c["s3"].put_bucket_policy(Bucket=work, Policy=json.dumps(sp["PolicyDocument"]))
        sdenies = {st["Sid"]: st for st in statements(c["s3"].get_bucket_policy(Bucket=work)["Policy"])}
        want_state = {"DenyInsecureTransport"}
        if params.get("KmsKeyArn"):
            want_state |= {"DenyWritesNotEncryptedWithKms", "DenyWritesWithAnotherKmsKey"}
        check(set(sdenies) == want_state, f"state bucket policy {sorted(sdenies)}, wanted {sorted(want_state)}")
        for sid, st in sdenies.items():
            plain = {k: v for k, v in st.items() if k not in ("Resource", "Sid")}
            of_archive = {k: v for k, v in denies[sid].items() if k not in ("Resource", "Sid")}
            check(st["Effect"] == "Deny" and st["Principal"] == "*" and plain == of_archive, f"state bucket {sid}: {st}")
            check(
                sorted(as_list(st["Resource"])) == sorted(
                    x.replace(f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{work}") for x in as_list(denies[sid]["Resource"])
                ),
                f"state bucket {sid} resources {st['Resource']}",
            )
    r = denies["DenyReadingSessionsButToTheJobAndTheReaders"]
    readers = [x for x in params.get("ReaderRoleArns", "").split(",") if x]
    check(
        r["Resource"] == f"arn:aws:s3:::{out_key}/sessions/*"
        and sorted(r["Action"]) == ["s3:GetObject", "s3:GetObjectVersion"]
        and r["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": [task_role["Arn"], maint_role["Arn"]] + readers}},
        f"session reads {r}",
    )
    if params.get("KmsKeyArn"):
        sse = denies["DenyWritesNotEncryptedWithKms"]
        check(
            sse["Action"] == "s3:PutObject" and sse["Resource"] == f"arn:aws:s3:::{bucket}/*"
            and sse["Condition"]
            == {
                "StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"},
                "Null": {"s3:x-amz-server-side-encryption": "false"},
            },
            f"SSE deny {sse}",
        )
        key = denies["DenyWritesWithAnotherKmsKey"]
        check(
            key["Action"] == "s3:PutObject" and key["Resource"] == f"arn:aws:s3:::{bucket}/*"
            and key["Condition"]
            == {
                "StringNotEquals": {"s3:x-amz-server-side-encryption-aws-kms-key-id": params["KmsKeyArn"]},
                "Null": {"s3:x-amz-server-side-encryption-aws-kms-key-id": "false"},
            },
            f"KMS key deny {key}",
        )

    # The Glue database and table, created with the Glue API from the template's inputs.
    gdb = props["GlueDatabase"]
    c["glue"].create_database(CatalogId=gdb["CatalogId"], DatabaseInput=gdb["DatabaseInput"])
    gt = props["GlueTable"]
    check(gt["DatabaseName"] == db, f"table in {gt['DatabaseName']}, the job names {db}")
    c["glue"].create_table(CatalogId=gt["CatalogId"], DatabaseName=gt["DatabaseName"], TableInput=gt["TableInput"])
    t = c["glue"].get_table(DatabaseName=db, Name=table)["Table"]
    sd = t["StorageDescriptor"]
    check(t["TableType"] == "EXTERNAL_TABLE", f"table type {t['TableType']}")
    check(
        [(x["Name"], x["Type"]) for x in sd["Columns"]]
        == [
            ("portal_arn", "string"), ("session_id", "string"), ("username", "string"),
            ("status", "string"), ("start_time", "timestamp"), ("end_time", "timestamp"),
            ("archived_at", "timestamp"), ("client_ip_addresses", "array<string>"),
        ],
        f"columns {sd['Columns']}",
    )
    check(
        [(x["Name"], x["Type"]) for x in t["PartitionKeys"]] == [("portal_id", "string"), ("start_date", "date")],
        f"partition keys {t['PartitionKeys']}",
    )
    check(sd["Location"] == f"{env['ARCHIVER_OUTPUT']}/sessions/", f"location {sd['Location']}")
    check(sd["InputFormat"] == "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat", "input format")
    check(sd["OutputFormat"] == "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat", "output format")
    check(sd["SerdeInfo"]["SerializationLibrary"] == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe", "serde")
    p = t["Parameters"]
    check(
        {k: v for k, v in p.items() if k.startswith("projection.")}
        == {
            "projection.enabled": "true",
            "projection.portal_id.type": "injected",
            "projection.start_date.type": "date",
            "projection.start_date.format": "yyyy-MM-dd",
            "projection.start_date.range": "2020-01-01,NOW",
            "projection.start_date.interval": "1",
            "projection.start_date.interval.unit": "DAYS",
        },
        f"projection {p}",
    )
    template_loc = p["storage.location.template"]
    check(
        template_loc == f"{env['ARCHIVER_OUTPUT']}/sessions/portal_id=${{portal_id}}/start_date=${{start_date}}/",
        f"storage.location.template {template_loc}",
    )
    # What the run's glue:UpdateTable does to it: the table accepts the enum projection.
    ti = {k: t[k] for k in ["Name", "StorageDescriptor", "PartitionKeys", "TableType", "Parameters"]}
    ti["Parameters"] = dict(p, **{"projection.portal_id.type": "enum", "projection.portal_id.values": "a,b"})
    c["glue"].update_table(DatabaseName=db, TableInput=ti)
    p2 = c["glue"].get_table(DatabaseName=db, Name=table)["Table"]["Parameters"]
    check(p2["projection.portal_id.values"] == "a,b", f"after update {p2}")
    # What the task's --glue-partitions does to it: a partition with the table's storage
    # descriptor at its folder, then projection off.
    part_sd = dict(sd, Location=f"{env['ARCHIVER_OUTPUT']}/sessions/portal_id=a/start_date=2026-11-20/")
    errors = c["glue"].batch_create_partition(
        DatabaseName=db, TableName=table,
        PartitionInputList=[{"Values": ["a", "2026-11-20"], "StorageDescriptor": part_sd}],
    ).get("Errors")
    check(not errors, f"BatchCreatePartition {errors}")
    ti["Parameters"] = dict(ti["Parameters"], **{"projection.enabled": "false"})
    c["glue"].update_table(DatabaseName=db, TableInput=ti)
    parts = c["glue"].get_partitions(DatabaseName=db, TableName=table, Expression="start_date = '2026-11-20'")
    check([x["Values"] for x in parts["Partitions"]] == [["a", "2026-11-20"]], f"partitions {parts}")

    # The schedule, created with the Scheduler API from the template's properties.
    s = props["Schedule"]
    ecsp = dict(s["Target"]["EcsParameters"])
    ecsp["NetworkConfiguration"] = {
        "awsvpcConfiguration": ecsp["NetworkConfiguration"]["AwsvpcConfiguration"]
    }
    target = dict(s["Target"], EcsParameters=ecsp)
    c["scheduler"].create_schedule(
        Name=s["Name"],
        ScheduleExpression=s["ScheduleExpression"],
        ScheduleExpressionTimezone=s["ScheduleExpressionTimezone"],
        State=s["State"],
        FlexibleTimeWindow=s["FlexibleTimeWindow"],
        Target=target,
    )
    got = c["scheduler"].get_schedule(Name=s["Name"])
    tgt = got["Target"]
    check(got["FlexibleTimeWindow"] == {"Mode": "OFF"}, f"window {got['FlexibleTimeWindow']}")
    check(got["ScheduleExpression"] == "cron(17 2 * * ? *)" and got["State"] == "ENABLED", f"schedule {got}")
    check(tgt["Arn"] == cluster_arn, f"target {tgt['Arn']} is not the cluster {cluster_arn}")
    e = tgt["EcsParameters"]
    check(e["TaskDefinitionArn"] == td_arn, f"schedule runs {e['TaskDefinitionArn']}, not {td_arn}")
    check(e["LaunchType"] == "FARGATE" and e["TaskCount"] == 1, f"ecs {e}")
    net = e["NetworkConfiguration"]["awsvpcConfiguration"]
    check(
        net == {"Subnets": SUBNETS, "SecurityGroups": [SECURITY_GROUP], "AssignPublicIp": "DISABLED"},
        f"network {net}",
    )
    srole = role_of_arn(c, tgt["RoleArn"])
    check(
        [st["Principal"] for st in statements(srole["AssumeRolePolicyDocument"])]
        == [{"Service": "scheduler.amazonaws.com"}],
        "scheduler role trust",
    )
    sperms = inline_policies(c, srole["RoleName"])
    check(allows(sperms, "ecs:RunTask", td_arn), f"scheduler role cannot run {td_arn}")
    run = [st for st in sperms if st["Action"] == "ecs:RunTask"]
    check(run[0]["Condition"] == {"ArnLike": {"ecs:cluster": cluster_arn}}, f"RunTask condition {run}")
    for arn in [task_role["Arn"], atts["TaskExecutionRole.Arn"]]:
        check(allows(sperms, "iam:PassRole", arn), f"scheduler role cannot pass {arn}")
    check(not allows(sperms, "iam:PassRole", f"arn:aws:iam::{account}:role/admin"), "passes any role")
    return outputs, env


# ------------------------------------------------------------------ a member account


def member_stack(c, tdir, task_role_arn, maint_role_arn, external_id):
    body = open(f"{tdir}/member-read-role.yaml").read()
    _, outputs = create_stack(
        c,
        "archiver-member",
        body,
        {"ArchiverTaskRoleArn": task_role_arn, "ArchiverMaintenanceRoleArn": maint_role_arn, "ExternalId": external_id},
    )
    role = role_of_arn(c, outputs["RoleArn"])
    check(role["RoleName"] == "archiver-read", f"role name {role['RoleName']}")
    check(role["MaxSessionDuration"] == 3600, f"MaxSessionDuration {role['MaxSessionDuration']}")
    (trust,) = statements(role["AssumeRolePolicyDocument"])
    check(
        trust["Principal"] == {"AWS": [task_role_arn, maint_role_arn]}
        and trust["Action"] == "sts:AssumeRole"
        and trust["Condition"] == {"StringEquals": {"sts:ExternalId": external_id}},
        f"trust {trust}",
    )
    perms = inline_policies(c, role["RoleName"])
    granted = sorted(a for s in perms for a in as_list(s["Action"]))
    check(
        granted == ["workspaces-web:GetSession", "workspaces-web:ListPortals", "workspaces-web:ListSessions"],
        f"member role grants {granted}",
    )
    account = c["sts"].get_caller_identity()["Account"]
    portal = f"arn:aws:workspaces-web:{REGION}:{account}:portal/0a1b2c3d-0000-4000-8000-123456789abc"
    check(allows(perms, "workspaces-web:ListSessions", portal), "ListSessions on the account's portals")
    check(
        not allows(perms, "workspaces-web:ListSessions", portal.replace(account, "999999999999")),
        "ListSessions on other accounts' portals",
    )
    check(c["iam"].list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"] == [], "managed policies")
    return role


def main():
    endpoint, tdir = sys.argv[1], sys.argv[2]
    c = clients(endpoint)
    common = {
        "Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/archiver:0.1.0",
        "ExternalId": EXTERNAL_ID,
        "Subnets": ",".join(SUBNETS),
        "SecurityGroup": SECURITY_GROUP,
    }
    org = dict(common, OrganizationId="o-a1b2c3d4e5")
    # The defaults: the organization's accounts, SSE-S3, staged objects never expire.
    outputs, env = archive_stack(c, tdir, "archiver", org)
    role = member_stack(c, tdir, outputs["TaskRoleArn"], outputs["MaintenanceRoleArn"], env["ARCHIVER_EXTERNAL_ID"])
    check(role["RoleName"] == env["ARCHIVER_ACCOUNT_ROLE"], "the job assumes another role name")
    # Listed accounts, a KMS key, a named bucket, staged objects expiring, signed digests.
    key = c["kms"].create_key()["KeyMetadata"]["Arn"]
    signing_key = c["kms"].create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["Arn"]
    archive_stack(
        c,
        tdir,
        "archiver-kms",
        dict(
            common,
            AccountIds=",".join(MEMBERS),
            KmsKeyArn=key,
            BucketName="archiver-kms-archive",
            StagingExpirationDays="90",
            GlueDatabaseName="archiver_kms",
            DigestSigningKeyArn=signing_key,
            ReaderRoleArns="arn:aws:iam::123456789012:role/analyst,arn:aws:iam::123456789012:role/audit-*",
        ),
    )
    # Object Lock: the archive bucket locked in governance mode, the state and the staged files
    # in a second bucket; named buckets, another prefix, a KMS key, staged objects expiring.
    archive_stack(
        c,
        tdir,
        "archiver-worm",
        dict(
            org,
            ObjectLock="Enabled",
            ObjectLockRetentionDays="7",
            BucketName="archiver-worm-archive",
            StateBucketName="archiver-worm-state",
            Prefix="audit/sessions-archive",
            KmsKeyArn=key,
            StagingExpirationDays="90",
            GlueDatabaseName="archiver_worm",
        ),
    )
    # The template's Rules refuse what would contradict the lock (moto ignores Rules).
    template = load(f"{tdir}/archive-account.yaml")
    pseudo = {"AWS::AccountId": "123456789012", "AWS::Region": REGION, "AWS::Partition": "aws", "AWS::StackName": "x"}
    for extra, failing in [
        ({"ObjectLock": "Enabled", "Versioning": "Suspended"}, ["ObjectLockKeepsVersioning"]),
        ({"StateBucketName": "archiver-state"}, ["StateBucketOnlyWithObjectLock"]),
        ({"ObjectLock": "Enabled", "StateBucketName": "archiver-state"}, []),
        ({"Versioning": "Suspended"}, []),
    ]:
        got = Resolver(template, dict(org, **extra), pseudo, {}, {}).failed_rules(template)
        check(got == failing, f"rules failing with {extra}: {got}, wanted {failing}")
    print("cfn_check: ok (3 archive-account stacks, 1 member-read-role stack)")


if __name__ == "__main__":
    try:
        main()
    except Mismatch as e:
        print(f"cfn_check: MISMATCH: {e}", file=sys.stderr)
        sys.exit(1)
