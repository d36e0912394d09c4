# The two commands a newcomer needs: `make demo` and `make test`.
GO ?= go

.PHONY: caddy demo test bench vet
caddy: ## ./caddy from the pinned recipe in xcaddy.json
	$(GO) run ./internal/buildcaddy -o caddy

demo: caddy ## the gateway on http://localhost:8080 in front of the demo app
	@mkdir -p .demo
	$(GO) build -o .demo/demoapp ./examples/demoapp
	@.demo/demoapp -listen 127.0.0.1:3000 -origin http://localhost:8080 & \
	app=$$!; trap 'kill $$app 2>/dev/null' EXIT INT TERM; \
	XDG_DATA_HOME=$(CURDIR)/.demo/data XDG_CONFIG_HOME=$(CURDIR)/.demo/config \
	./caddy run --config Caddyfile.example --adapter caddyfile

test: caddy ## the whole test suite, including the real binary
	$(GO) vet ./...
	SIGRA_CADDY=$(CURDIR)/caddy $(GO) test -race -count=1 -timeout 20m ./...

bench: caddy ## gate vs plain Caddy under load; BENCHFLAGS=-quick for a 30 s smoke test
	$(GO) run ./bench $(BENCHFLAGS)

vet:
	$(GO) vet ./...
