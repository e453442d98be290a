"""The Slack adapter against the fake Slack (Web API, Socket Mode, HTTP), with the real slack-bolt."""
