# Shared by the CGI scripts and the worker.

# The value of query parameter $1 in $QUERY_STRING, URL-decoded.
param() {
	local v
	v=$(printf '%s\n' "${QUERY_STRING:-}" | tr '&' '\n' | sed -n "s/^$1=//p" | head -n 1)
	httpd -d "$v"
}

# Talks to the data role: kv OP KEY [BODY].
kv() {
	if [ $# -ge 3 ]; then
		timeout 3 wget -q -O - --post-data "$3" "http://$DATA_ADDR/cgi-bin/kv?op=$1&k=$2"
	else
		timeout 3 wget -q -O - "http://$DATA_ADDR/cgi-bin/kv?op=$1&k=$2"
	fi
}

reply() {
	printf 'Status: %s\r\nContent-Type: text/plain\r\n\r\n%s\n' "$1" "$2"
	exit 0
}
