"""Price and demand-response signal inputs that are not network adapters.

- :mod:`.messages`: the JSON schema of price and DR messages (as posted on
  MQTT's ``price/set`` and ``dr/set``), parsed into the model's
  :class:`~gateway.model.PriceSignal` / :class:`~gateway.model.DemandResponseEvent`;
- :mod:`.signing`: Ed25519 signatures over the canonical JSON, with a sequence
  number and an expiry, so a forged or replayed message is refused;
- :mod:`.gate`: the component that takes :class:`~gateway.bus.SignalInput` s
  off the bus, checks them and publishes the signal or a
  :class:`~gateway.bus.SignalRejected`;
- :mod:`.openadr`: an OpenADR 2.0b VEN (openleadr).

The meter's own tariff indicator and limiter threshold need no input here:
the rule engine reads them from the snapshots (``tariff``,
``meter_power_limit_kw``).
"""
