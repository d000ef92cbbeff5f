import sys
from twisted.logger import globalLogPublisher, formatEvent
def obs(e):
    if True:
        print("LOG", e.get('log_namespace'), formatEvent(e), file=sys.stderr)
globalLogPublisher.addObserver(obs)
