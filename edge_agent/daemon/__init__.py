"""The agent daemon: the agent loop, its configuration, the MQTT link, the offline
outbox, model slots, bundle download, probation, the local API and pinned trust."""
