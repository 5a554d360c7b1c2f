// Stands in for github.com/anacrolix/go-utp, which anacrolix/torrent
// v1.62 imports and which the Go module proxy these machines use refuses
// (403 for every version). boottorrent never uses uTP (DisableUTP in the
// seeder and the boot client), so this module only has to satisfy the
// library's imports. See the replace directive in boottorrent's go.mod;
// delete it and this folder once go-utp resolves.
module github.com/anacrolix/go-utp

go 1.24
