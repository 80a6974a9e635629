// Command etcd is upstream etcd's server, built from the Go module proxy so the
// local control plane needs no download beyond the package registries.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
