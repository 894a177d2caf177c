"""A small checker of OCSF 1.1.0 events for the three classes guard exports, written from the schema itself.

Source: the ocsf-schema repository at tag v1.1.0 — events/base_event.json (+ includes/classification.json,
includes/occurrence.json), events/system/system.json, events/system/filesystem.json (File System Activity,
uid 1 in category 1), events/system/process.json (Process Activity, uid 7), events/network/network.json and
events/network/network_activity.json (uid 1 in category 4; activities from
includes/network/network_activities.json), profiles/security_control.json, and the objects metadata,
product, file, process, actor, device, network_endpoint (endpoint), network_connection_info. "required"
attributes and the objects' `at_least_one` constraints are transcribed here; enums are the ones named.
"""

from __future__ import annotations

from typing import Any

BASE_REQUIRED = ("activity_id", "category_uid", "class_uid", "type_uid", "time", "metadata", "severity_id")
SECURITY_CONTROL_REQUIRED = ("action_id",)
CLASS_REQUIRED = {
    1001: ("actor", "device", "file"),  # system.json: actor, device; filesystem.json: actor, file
    1007: ("actor", "device", "process"),  # system.json: actor, device; process.json: process
    4001: ("dst_endpoint", "src_endpoint"),  # network.json
}
ACTIVITIES = {
    1001: {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0, 99},
    1007: {1, 2, 3, 4, 5, 0, 99},
    4001: {1, 2, 3, 4, 5, 6, 0, 99},
}
SEVERITY = {0, 1, 2, 3, 4, 5, 6, 99}
ACTION = {0, 1, 2, 99}
DISPOSITION = set(range(0, 28)) | {99}
FILE_TYPE = {0, 1, 2, 3, 4, 5, 6, 7, 99}
DIRECTION = {0, 1, 2, 3, 99}
ENDPOINT_ONE_OF = ("ip", "uid", "name", "hostname", "svc_name", "instance_uid", "interface_uid",
                   "interface_name")
ACTOR_ONE_OF = ("process", "user", "invoked_by", "session")
PROCESS_ONE_OF = ("pid", "uid")


def problems(event: dict[str, Any]) -> list[str]:
    """Every way `event` falls short of OCSF 1.1.0 for its class ([] when it conforms)."""
    out: list[str] = []

    def need(obj: Any, keys: tuple[str, ...], where: str) -> None:
        if not isinstance(obj, dict):
            out.append(f"{where}: not an object")
            return
        out.extend(f"{where}.{k}: required" for k in keys if obj.get(k) in (None, ""))

    def one_of(obj: Any, keys: tuple[str, ...], where: str) -> None:
        if not isinstance(obj, dict) or not any(obj.get(k) not in (None, "", {}) for k in keys):
            out.append(f"{where}: needs at least one of {', '.join(keys)}")

    class_uid = event.get("class_uid")
    if class_uid not in CLASS_REQUIRED:
        return [f"class_uid {class_uid!r}: not one of {sorted(CLASS_REQUIRED)}"]
    need(event, BASE_REQUIRED + CLASS_REQUIRED[class_uid], "event")
    if "security_control" in event.get("metadata", {}).get("profiles", []):
        need(event, SECURITY_CONTROL_REQUIRED, "event")
    if event.get("category_uid") != class_uid // 1000:
        out.append(f"category_uid {event.get('category_uid')} does not match class {class_uid}")
    activity = event.get("activity_id")
    if activity not in ACTIVITIES[class_uid]:
        out.append(f"activity_id {activity!r} is not an activity of class {class_uid}")
    if event.get("type_uid") != class_uid * 100 + (activity if isinstance(activity, int) else 0):
        out.append("type_uid is not class_uid * 100 + activity_id")
    if not isinstance(event.get("time"), int) or event["time"] <= 0:
        out.append("time: expected milliseconds since the epoch")
    for name, allowed in (("severity_id", SEVERITY), ("action_id", ACTION), ("disposition_id", DISPOSITION)):
        if name in event and event[name] not in allowed:
            out.append(f"{name} {event[name]!r} is not in the enum")
    meta = event.get("metadata")
    need(meta, ("product", "version"), "metadata")
    if isinstance(meta, dict):
        need(meta.get("product"), ("vendor_name",), "metadata.product")
    if "actor" in event:
        one_of(event["actor"], ACTOR_ONE_OF, "actor")
        if isinstance(event["actor"], dict) and "process" in event["actor"]:
            one_of(event["actor"]["process"], PROCESS_ONE_OF, "actor.process")
    if "device" in event:
        need(event["device"], ("type_id",), "device")
    if class_uid == 1001:
        need(event.get("file"), ("name", "type_id"), "file")
        if isinstance(event.get("file"), dict) and event["file"].get("type_id") not in FILE_TYPE:
            out.append("file.type_id is not in the enum")
    if class_uid == 1007:
        one_of(event.get("process"), PROCESS_ONE_OF, "process")
        proc_file = (event.get("process") or {}).get("file")
        if proc_file is not None:
            need(proc_file, ("name", "type_id"), "process.file")
    if class_uid == 4001:
        one_of(event.get("dst_endpoint"), ENDPOINT_ONE_OF, "dst_endpoint")
        one_of(event.get("src_endpoint"), ENDPOINT_ONE_OF, "src_endpoint")
        info = event.get("connection_info")
        if info is not None:
            need(info, ("direction_id",), "connection_info")
            if isinstance(info, dict) and info.get("direction_id") not in DIRECTION:
                out.append("connection_info.direction_id is not in the enum")
    return out
