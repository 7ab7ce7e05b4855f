"""Notifications: webhooks (generic JSON, DingTalk, WeCom), e-mail and a dead-man's switch, on failure and
recovery of what ``drillctl status`` reports."""
