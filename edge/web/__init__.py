"""The kiosk page ``edge-serve`` serves at ``/``: plain HTML, CSS and JavaScript with an AudioWorklet, no build step."""
