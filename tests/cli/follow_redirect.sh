#!/bin/sh
# A stand-in browser for tests/test_cli.cpp: `aps-auth login` runs it as $BROWSER with the authorize URL. It
# follows the mock server's redirect (consent is auto-approved) to the CLI's loopback callback, as a browser
# would. APS_TEST_CA_FILE, when set, is the CA that signed the mock's HTTPS certificate.
url="$1"
if [ -n "$APS_TEST_CA_FILE" ]; then
  exec curl --silent --location --max-redirs 5 --max-time 20 --noproxy '*' --cacert "$APS_TEST_CA_FILE" \
    --output /dev/null "$url"
fi
exec curl --silent --location --max-redirs 5 --max-time 20 --noproxy '*' --output /dev/null "$url"
