#!/bin/sh
# GET or POST /cgi-bin/shorten?url=<url> -> the short URL. The code is a hash of the URL,
# so shortening the same URL twice gives the same code.
. /app/bin/lib.sh
url=$(param url)
if [ -z "$url" ] && [ "${REQUEST_METHOD:-}" = POST ]; then
	QUERY_STRING=$(head -c "${CONTENT_LENGTH:-0}")
	url=$(param url)
fi
case "$url" in
http://?* | https://?*) ;;
*) reply "400 Bad Request" "url must start with http:// or https://" ;;
esac
case "$url" in
*[[:space:]]*) reply "400 Bad Request" "url must not contain spaces" ;;
esac
code=$(printf '%s' "$url" | md5sum | head -c 7)
kv set "url:$code" "$url" > /dev/null || reply "503 Service Unavailable" "data store unreachable"
echo "web: shortened $url as $code" >&2
reply "200 OK" "http://${HTTP_HOST:-localhost}/cgi-bin/s/$code"
