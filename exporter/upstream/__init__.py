"""Talking to Microsoft: Entra ID tokens (`auth`), Partner Center requests (`client`), response bodies (`model`)."""
