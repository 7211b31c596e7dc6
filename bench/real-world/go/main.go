// The file the benchmark touches (one comment line appended per round).
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	check := flag.Bool("check", false, "print the routes and exit")
	addr := flag.String("addr", ":8080", "listen address")
	flag.Parse()
	s := newStore()
	mux := routes(s)
	if *check {
		fmt.Println("routes ok:", len(s.items) == 0)
		os.Exit(0)
	}
	log.Fatal(http.ListenAndServe(*addr, mux))
}
