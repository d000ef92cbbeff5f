"""twistd plugin: C{twistd -n asapp-mg --config etc/asapp-mg.toml}."""

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    synopsis = "[--config FILE]"
    longdesc = (
        "Runs the asapp-mg media gateway: the Start/Stop API, the direct WebSocket "
        "API and every configured ingress, transcribing with Vosk."
    )
    optParameters = [
        ["config", "c", "etc/asapp-mg.toml", "Path to the TOML configuration file."],
    ]


@implementer(IServiceMaker, IPlugin)
class GatewayServiceMaker:
    tapname = "asapp-mg"
    description = "Contact-centre media gateway: call audio in, transcripts out."
    options = Options

    def makeService(self, options):
        from mgateway.config import ConfigError, load_config
        from mgateway.service import make_service

        try:
            return make_service(load_config(options["config"]))
        except ConfigError as e:
            raise SystemExit(f"asapp-mg: {e}") from None


serviceMaker = GatewayServiceMaker()
