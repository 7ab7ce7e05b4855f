"""Drill reports: the figures a report shows, and the report itself in HTML and PDF, in zh-CN and English."""
