from mqtt_presence.cli import main

main()
