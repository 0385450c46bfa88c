"""Push delivery (issue 15): subscriptions that POST a topic's records to an HTTP endpoint, each a
share group whose consumer is the broker (docs/push.md)."""
