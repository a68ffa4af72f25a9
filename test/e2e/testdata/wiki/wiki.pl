#!/usr/bin/perl
# The e2e's "wiki" pod: a minimal HTTP/1.0 static file server with
# IO::Socket::INET, one request at a time. Usage: wiki.pl PORT DIR
use strict;
use warnings;
use IO::Socket::INET;

my ($port, $dir) = @ARGV;
my $srv = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $port,
    Listen => 64, ReuseAddr => 1, Proto => "tcp") or die "listen: $!";
while (my $c = $srv->accept) {
    my $line = <$c> // "";
    while (my $h = <$c>) { last if $h =~ /^\r?\n$/; }
    my ($path) = $line =~ m{^GET /([A-Za-z0-9._-]*)};
    $path = "index.html" if defined $path && $path eq "";
    if (defined $path && open(my $f, "<", "$dir/$path")) {
        local $/;
        my $body = <$f>;
        close $f;
        print $c "HTTP/1.0 200 OK\r\nContent-Length: " . length($body) . "\r\n\r\n" . $body;
    } else {
        print $c "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    }
    close $c;
}
