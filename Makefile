# The two commands a newcomer needs: `make demo` and `make test`.
GO ?= go

.PHONY: caddy demo test bench vet
caddy: ## ./caddy from the pinned recipe in xcaddy.json
	$(GO) run ./internal/buildcaddy -o caddy

demo: caddy ## the gateway on http://localhost:8080 in front of the demo app
	@mkdir -p .demo && rm -f .demo/app.ready
	$(GO) build -o .demo/demoapp ./examples/demoapp
	@.demo/demoapp -listen 127.0.0.1:3000 -origin http://localhost:8080 -need-free :8080,localhost:2019 -ready .demo/app.ready & \
	app=$$!; gw=; trap 'kill $$app $$gw 2>/dev/null' EXIT; trap 'exit 130' INT TERM; trap 'exit 129' HUP; \
	while [ ! -e .demo/app.ready ]; do kill -0 $$app 2>/dev/null || exit 1; sleep 0.1; done; \
	XDG_DATA_HOME=$(CURDIR)/.demo/data XDG_CONFIG_HOME=$(CURDIR)/.demo/config \
	./caddy run --config Caddyfile.example --adapter caddyfile & gw=$$!; \
	while kill -0 $$app 2>/dev/null && kill -0 $$gw 2>/dev/null; do sleep 0.5; done; \
	kill -0 $$app 2>/dev/null || echo "the demo app stopped, so the gateway stops too: nothing else may answer on its port" >&2; \
	exit 1

test: caddy ## the whole test suite, including the real binary
	$(GO) vet ./...
	SIGRA_CADDY=$(CURDIR)/caddy $(GO) test -race -count=1 -timeout 20m ./...

bench: caddy ## gate vs plain Caddy under load; BENCHFLAGS=-quick for a 30 s smoke test
	$(GO) run ./bench $(BENCHFLAGS)

vet:
	$(GO) vet ./...
