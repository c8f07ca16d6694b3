package wsbridge

import (
	"embed"
	"io/fs"
	"net/http"
)

// static holds the browser client (herald.js, herald.d.ts) and the demo page.
//
//go:embed static
var static embed.FS

// staticHandler serves the embedded files at the root: / is the demo page,
// /herald.js the client.
func staticHandler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err)
	}
	return http.FileServerFS(sub)
}
