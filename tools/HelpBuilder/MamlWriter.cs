// Turns parsed cmdlet pages into the MAML file Get-Help reads (<Assembly>.dll-Help.xml).
// PowerShell's help reader matches elements by their qualified names, so the prefixes
// maml:, command: and dev: are part of the format, not a matter of taste.
using System.Text;
using System.Xml;
using System.Xml.Linq;

namespace QubesFirewall.HelpBuilder;

public static class MamlWriter
{
    public static readonly XNamespace Msh = "http://msh";
    public static readonly XNamespace Maml = "http://schemas.microsoft.com/maml/2004/10";
    public static readonly XNamespace Command = "http://schemas.microsoft.com/maml/dev/command/2004/10";
    public static readonly XNamespace Dev = "http://schemas.microsoft.com/maml/dev/2004/10";
    public static readonly XNamespace MSHelp = "http://msdn.microsoft.com/mshelp";

    /// <summary>The MAML document for these cmdlets, ordered by name.</summary>
    public static XDocument ToMaml(IEnumerable<CmdletDoc> cmdlets)
    {
        var root = new XElement(Msh + "helpItems",
            new XAttribute("schema", "maml"),
            new XAttribute("xmlns", Msh.NamespaceName),
            new XAttribute(XNamespace.Xmlns + "maml", Maml.NamespaceName),
            new XAttribute(XNamespace.Xmlns + "command", Command.NamespaceName),
            new XAttribute(XNamespace.Xmlns + "dev", Dev.NamespaceName),
            new XAttribute(XNamespace.Xmlns + "MSHelp", MSHelp.NamespaceName),
            cmdlets.OrderBy(c => c.Name, StringComparer.OrdinalIgnoreCase).Select(CommandElement));
        return new XDocument(new XDeclaration("1.0", "utf-8", null), root);
    }

    /// <summary>Writes the MAML file (UTF-8, LF line ends, indented).</summary>
    public static void Write(IEnumerable<CmdletDoc> cmdlets, string path)
    {
        var settings = new XmlWriterSettings
        {
            Indent = true,
            IndentChars = "  ",
            NewLineChars = "\n",
            NewLineHandling = NewLineHandling.Replace,
            Encoding = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false),
        };
        using var writer = XmlWriter.Create(path, settings);
        ToMaml(cmdlets).Save(writer);
    }

    static XElement CommandElement(CmdletDoc doc) =>
        new(Command + "command",
            new XElement(Command + "details",
                new XElement(Command + "name", doc.Name),
                new XElement(Command + "verb", doc.Verb),
                new XElement(Command + "noun", doc.Noun),
                Description(doc.Synopsis)),
            Description(doc.Description),
            new XElement(Command + "syntax",
                doc.Syntax.Select(set => new XElement(Command + "syntaxItem",
                    new XElement(Maml + "name", doc.Name),
                    set.ParameterNames
                        .Select(n => doc.GetParameter(n)!)
                        .Select(p => Parameter(p, p.For(set.ParameterSetName)!, inSyntax: true))))),
            new XElement(Command + "parameters",
                doc.Parameters.Select(p => Parameter(p, p.Attributes[0], inSyntax: false))),
            new XElement(Command + "inputTypes",
                doc.Inputs.Select(t => new XElement(Command + "inputType", TypeElement(t.Name), Description(t.Description)))),
            new XElement(Command + "returnValues",
                doc.Outputs.Select(t => new XElement(Command + "returnValue", TypeElement(t.Name), Description(t.Description)))),
            doc.Notes.Count == 0 ? null : new XElement(Maml + "alertSet",
                new XElement(Maml + "alert", Paras(doc.Notes))),
            new XElement(Command + "examples",
                doc.Examples.Select(e => new XElement(Command + "example",
                    new XElement(Maml + "title", ExampleTitle(e.Title)),
                    new XElement(Dev + "code", e.Code),
                    // The empty para leaves a blank line before the next example's title.
                    new XElement(Dev + "remarks", Paras(e.Remarks), new XElement(Maml + "para", ""))))),
            new XElement(Command + "relatedLinks",
                Links(doc).Select(l => new XElement(Maml + "navigationLink",
                    new XElement(Maml + "linkText", l.Text),
                    new XElement(Maml + "uri", l.Uri ?? "")))));

    static IEnumerable<LinkDoc> Links(CmdletDoc doc)
    {
        if (doc.OnlineVersion is { } online) yield return new LinkDoc("Online Version:", online);
        foreach (var link in doc.RelatedLinks) yield return link;
    }

    static XElement Parameter(ParameterDoc p, ParameterAttributes a, bool inSyntax)
    {
        // A switch takes no value: in the syntax it shows as [-Name], so no parameterValue there.
        var showValue = !(inSyntax && p.IsSwitch);
        return new XElement(Command + "parameter",
            new XAttribute("required", a.Required ? "true" : "false"),
            new XAttribute("variableLength", p.Type.EndsWith("[]", StringComparison.Ordinal) ? "true" : "false"),
            new XAttribute("globbing", a.AcceptsWildcards ? "true" : "false"),
            new XAttribute("pipelineInput", a.PipelineInputText),
            new XAttribute("position", a.PositionText),
            new XAttribute("aliases", p.Aliases.Count == 0 ? "none" : string.Join(", ", p.Aliases)),
            new XElement(Maml + "name", p.Name),
            Description(p.Description),
            a.AcceptedValues.Count > 0
                ? new XElement(Command + "parameterValueGroup",
                    a.AcceptedValues.Select(v => new XElement(Command + "parameterValue",
                        new XAttribute("required", "false"), new XAttribute(Command + "variableLength", "false"), v)))
                : null,
            showValue
                ? new XElement(Command + "parameterValue",
                    new XAttribute("required", p.IsSwitch ? "false" : "true"),
                    new XAttribute("variableLength", "false"),
                    p.Type)
                : null,
            TypeElement(p.Type),
            new XElement(Dev + "defaultValue", a.DefaultValue.Length == 0 ? "None" : a.DefaultValue));
    }

    static XElement TypeElement(string name) =>
        new(Dev + "type", new XElement(Maml + "name", name), new XElement(Maml + "uri"));

    static XElement Description(string text) => Description([text]);

    static XElement Description(IEnumerable<string> paragraphs) => new(Maml + "description", Paras(paragraphs));

    static IEnumerable<XElement> Paras(IEnumerable<string> paragraphs) =>
        paragraphs.Select(p => new XElement(Maml + "para", p));

    /// <summary>"Example 1: X" → "------ Example 1: X ------", as Get-Help shows built-in examples.</summary>
    public static string ExampleTitle(string title)
    {
        const int width = 64;
        var pad = Math.Max(2, (width - title.Length - 2) / 2);
        var dashes = new string('-', pad);
        return $"{dashes} {title} {dashes}";
    }
}
