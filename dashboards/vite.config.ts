import { defineConfig } from "vite";

// Relative asset URLs so the cloud can serve dist/ at "/" (or under any prefix) as plain files.
export default defineConfig({
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    // The tree-shaken ECharts parts dominate the bundle (~0.5 MB); served locally, that is fine.
    chunkSizeWarningLimit: 1000,
  },
  server: {
    // `npm run dev` against a running cloud: API and websocket are proxied to it.
    proxy: {
      "/api": "http://127.0.0.1:8000",
      "/ws": { target: "ws://127.0.0.1:8000", ws: true },
    },
  },
});
