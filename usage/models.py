"""Usage metering and credits (pricing versions, call events, ledger) — see the metering issue."""
