# The image of docker-compose.yml's `demo` service: the repository and its wrapper (pika), so
# that `python demo.py <lesson>` and every lesson script run in it. The test tools of
# requirements.txt are left out.
FROM python:3.12-slim
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir --root-user-action=ignore .
CMD ["python", "demo.py", "work_queue"]
