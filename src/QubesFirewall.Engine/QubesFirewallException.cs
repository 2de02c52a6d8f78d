namespace QubesFirewall.Engine;

/// <summary>What kind of failure, so the cmdlet layer can map it to an ErrorCategory in one place.</summary>
public enum FailureKind
{
    InvalidArgument,
    InvalidData,
    ObjectNotFound,
    ResourceExists,
    ResourceUnavailable,
    InvalidOperation,
    PermissionDenied,
    NotImplemented,
    ConnectionError,
    WriteError,
    ProtocolError,
}

/// <summary>
/// A failure the engine reports as data: a stable PascalCase id (becomes the ErrorRecord's
/// ErrorId), a kind, the object involved and a message meant for the user.
/// </summary>
public class QubesFirewallException : Exception
{
    public QubesFirewallException(string errorId, FailureKind kind, string message, object? target = null, Exception? inner = null)
        : base(message, inner)
    {
        ErrorId = errorId;
        Kind = kind;
        Target = target;
    }

    public string ErrorId { get; }
    public FailureKind Kind { get; }
    public object? Target { get; }

    public static QubesFirewallException Invalid(string errorId, string message, object? target = null)
        => new(errorId, FailureKind.InvalidArgument, message, target);
}
