"""The words of a drill report, in Simplified Chinese and English."""

from __future__ import annotations

LANGUAGES = ("zh-CN", "en")

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "Disaster-recovery drill report",
        "verdict": "Verdict",
        "passed": "PASSED", "failed": "FAILED", "incomplete": "INCOMPLETE", "not run": "not run",
        "scope": "Scope", "site": "Site", "started": "Started", "finished": "Finished", "drill": "Drill",
        "system": "System", "target": "Target", "snapshot": "Snapshot", "age": "Snapshot age",
        "rpo": "RPO achieved", "rto": "RTO", "objective": "objective", "verified": "Verified",
        "files": "files", "bytes": "bytes", "tables": "tables", "rows": "rows", "findings": "Findings",
        "none": "none", "infinite": "infinite (no restorable snapshot)",
        "timeline": "Timeline of the drill", "keys": "Signing keys",
        "fingerprint": "Fingerprint", "owner": "Owner", "role": "Role",
        "how_to_verify": "How to verify",
        "verify_text": "This report is part of an evidence bundle. Run <code>drillctl evidence verify BUNDLE "
                       "--trust COORDINATOR-FINGERPRINT</code> on any machine: it checks every record's signature, "
                       "its inclusion in the signed ledger checkpoint, and that the figures here follow from the "
                       "records. The bundle's README explains how to check the signatures by hand with openssl.",
        "failing": "Did not pass",
        "all_passed": "Every system was restored, verified and met its objectives.",
    },
    "zh-CN": {
        "title": "灾难恢复演练报告",
        "verdict": "结论",
        "passed": "通过", "failed": "未通过", "incomplete": "未完成", "not run": "未执行",
        "scope": "演练范围", "site": "站点", "started": "开始时间", "finished": "结束时间", "drill": "演练编号",
        "system": "系统", "target": "备份对象", "snapshot": "快照", "age": "快照时长",
        "rpo": "实际恢复点目标 (RPO)", "rto": "恢复时间 (RTO)", "objective": "目标", "verified": "已校验",
        "files": "个文件", "bytes": "字节", "tables": "张表", "rows": "行", "findings": "发现的问题",
        "none": "无", "infinite": "无穷大（无可恢复的快照）",
        "timeline": "演练时间线", "keys": "签名密钥",
        "fingerprint": "指纹", "owner": "持有者", "role": "角色",
        "how_to_verify": "如何校验",
        "verify_text": "本报告是证据包的一部分。可在任意计算机上运行 <code>drillctl evidence verify 证据包 "
                       "--trust 协调器指纹</code>：它会校验每条记录的签名、记录是否包含在已签名的账本检查点中，"
                       "以及本报告中的数字是否与记录一致。证据包中的 README 说明了如何使用 openssl 手工校验签名。",
        "failing": "未通过的项目",
        "all_passed": "所有系统均已恢复、校验通过并达到恢复目标。",
    },
}


def duration(seconds: float | None, lang: str) -> str:
    """A duration for people, e.g. ``2h 5m`` / ``2小时5分``; None is infinite."""
    if seconds is None:
        return TEXT[lang]["infinite"]
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if lang == "zh-CN":
        if hours:
            return f"{hours}小时{minutes}分"
        return f"{minutes}分{secs}秒" if minutes else f"{secs}秒"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"
