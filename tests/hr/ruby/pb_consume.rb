# Consumes protobuf employees like the Ruby platform (Action Subscriber) does.
#
#   ruby pb_consume.rb AMQP_URL EXCHANGE QUEUE COUNT
#
# Binds its own durable QUEUE to employee.created, prints "READY", then one JSON line
# per message with the decoded fields and the content type; deletes QUEUE after COUNT.
require "bunny"
require "json"
require_relative "employee_message"

url, exchange_name, queue_name, count = ARGV
count = Integer(count)
$stdout.sync = true

connection = Bunny.new(url, logger: Logger.new(nil))
connection.start
channel = connection.create_channel
exchange = channel.topic(exchange_name, durable: true)
queue = channel.queue(queue_name, durable: true)
queue.bind(exchange, routing_key: "employee.created")
puts "READY"

received = 0
done = Queue.new
queue.subscribe(manual_ack: true) do |delivery, properties, body|
  employee = EmployeeMessage.decode(body)
  puts JSON.generate(
    "guid" => employee.guid,
    "first_name" => employee.first_name,
    "last_name" => employee.last_name,
    "content_type" => properties.content_type,
  )
  channel.ack(delivery.delivery_tag)
  received += 1
  done << true if received == count
end

done.pop
queue.delete
connection.close
