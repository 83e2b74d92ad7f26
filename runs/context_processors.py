from runs.web.namespaces import current_namespace


def namespace(request):
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    return {"current_namespace": current_namespace(request)}
