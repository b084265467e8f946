"""Deployment checks: docker-compose.yml, docker/*.Dockerfile, .dockerignore, .env.example."""
