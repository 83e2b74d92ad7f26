from runs.web.namespaces import current_namespace, namespace_query_value


def namespace(request):
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    current = current_namespace(request)
    return {
        "current_namespace": current,
        "ns_value": namespace_query_value(current),
        "own_namespace": f"user:{request.user.username}",
    }
