// Command apiserver-forward makes the local API server (127.0.0.1:PORT) reachable from the real
// node's pods at the cluster's service IP: it accepts TCP connections on --listen and copies
// bytes both ways to --to. TLS passes through untouched, so clients verify the API server's own
// certificate (whose SANs include the service IP). It stops on SIGTERM or SIGINT.
package main

import (
	"flag"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	listen := flag.String("listen", "", "address to accept connections on, e.g. 10.0.0.1:443")
	to := flag.String("to", "", "address to forward them to, e.g. 127.0.0.1:16400")
	flag.Parse()
	if *listen == "" || *to == "" {
		log.Fatal("usage: apiserver-forward --listen ADDR --to ADDR")
	}
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listen on %s: %v", *listen, err)
	}
	log.Printf("forwarding %s to %s", *listen, *to)
	go func() {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
		sig := <-signals
		log.Printf("stopping on %v", sig)
		os.Exit(0)
	}()
	for {
		conn, err := listener.Accept()
		if err != nil {
			log.Fatalf("accept: %v", err)
		}
		go forward(conn.(*net.TCPConn), *to)
	}
}

func forward(client *net.TCPConn, to string) {
	defer client.Close()
	dialed, err := net.Dial("tcp", to)
	if err != nil {
		log.Printf("dial %s for %s: %v", to, client.RemoteAddr(), err)
		return
	}
	upstream := dialed.(*net.TCPConn)
	defer upstream.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src *net.TCPConn) {
		_, _ = io.Copy(dst, src)
		_ = dst.CloseWrite()
		done <- struct{}{}
	}
	go pipe(upstream, client)
	go pipe(client, upstream)
	<-done
	<-done
}
