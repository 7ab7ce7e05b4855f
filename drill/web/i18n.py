"""The web view's words in English and Chinese; the language from the lang cookie, else the browser's."""

from __future__ import annotations

LANGUAGES = ("en", "zh-CN")

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "title": "drill", "overview": "Overview", "agents": "Agents", "logout": "Log out", "login": "Log in",
        "account": "Account", "password": "Password", "wrong": "Wrong account or password.",
        "slow_down": "Too many failed log-ins; try again in a minute.", "system": "System", "target": "Target",
        "backup": "Last backup", "verification": "Last verification", "rpo": "RPO (objective)",
        "problems": "Problems", "all_well": "All well", "filter": "Filter", "host": "Host", "role": "Role",
        "site": "Site", "version": "Version", "status": "Status", "heartbeat": "Last heartbeat",
        "revoke": "Revoke", "approve": "Approve", "never": "never", "ago": "ago", "fleet": "Fleet",
        "signed_in_as": "Signed in as", "forbidden": "Your role may not do this.", "not_found": "Not found.",
        "bad_form": "The form was not accepted (it is stale or not from this page); reload and try again.",
        "drills": "Drills", "report": "Report", "bundle": "Evidence bundle", "started": "Started",
        "verdict": "Verdict", "rto": "RTO (max)", "history": "History", "backup_duration": "Backup duration",
        "backup_size": "Backup size", "verify_duration": "Verification duration", "rpo_achieved": "RPO achieved "
        "(time since the previous successful backup)", "pass_streak": "Verifications passed in a row",
        "backups": "Backups", "verifications": "Verifications", "level": "Level", "outcome": "Outcome",
        "finished": "Finished", "seconds": "s", "night": "Last night", "kind": "Kind", "where": "Where",
        "state": "State", "took": "Took", "findings": "Findings", "subject": "What",
    },
    "zh-CN": {
        "title": "drill", "overview": "总览", "agents": "代理", "logout": "退出", "login": "登录",
        "account": "账号", "password": "密码", "wrong": "账号或密码错误。",
        "slow_down": "登录失败次数过多，请一分钟后再试。", "system": "系统", "target": "目标",
        "backup": "最近备份", "verification": "最近验证", "rpo": "RPO（目标）",
        "problems": "问题", "all_well": "一切正常", "filter": "筛选", "host": "主机", "role": "角色",
        "site": "站点", "version": "版本", "status": "状态", "heartbeat": "最近心跳",
        "revoke": "吊销", "approve": "批准", "never": "从未", "ago": "前", "fleet": "集群",
        "signed_in_as": "当前用户", "forbidden": "您的角色无权执行此操作。", "not_found": "未找到。",
        "bad_form": "表单未被接受（已过期或并非来自本页）；请刷新后重试。",
        "drills": "演练", "report": "报告", "bundle": "证据包", "started": "开始时间",
        "verdict": "结论", "rto": "RTO（最大）", "history": "历史", "backup_duration": "备份耗时",
        "backup_size": "备份大小", "verify_duration": "验证耗时", "rpo_achieved": "实际 RPO（距上次成功备份的时间）",
        "pass_streak": "连续通过的验证次数", "backups": "备份", "verifications": "验证", "level": "级别",
        "outcome": "结果", "finished": "完成时间", "seconds": "秒", "night": "昨夜", "kind": "类型",
        "where": "位置", "state": "状态", "took": "耗时", "findings": "发现", "subject": "对象",
    },
}


def choose(cookie: str | None, accept_language: str | None) -> str:
    """The language: the cookie's if it names one, else the first of the browser's we speak, else English."""
    if cookie in LANGUAGES:
        return str(cookie)
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return "en"
